// The side panel's structured editors, in place of JSON text boxes:
//
// - RuleEditor: a condition split's segment rule, as nested AND/OR groups of conditions. Its vocabulary
//   (fields by group, each field's operators and the value each operator takes, parameters such as the
//   window or the event's property filters) is crm's segment rule schema (crm.segments.fields
//   .builder_schema), and its words are the segment builder's (crm.segments.forms.builder_labels), both
//   sent by journeys/designer.py: the same rules, worded the same way, as in the segment admin
//   (static/crm/segments/builder.js). The server validates the rule again on every save.
// - FiltersEditor: an event's property filters (journeys/nodes.py FILTER_OPS), one key/op/value row each.
//
// Every control has a label (visible, or aria-label where a row would repeat it), every action is a
// button, and nothing needs the mouse. Free text that is split into a list (comma-separated values) keeps
// its own text while typed, so "a, " is not rewritten to "a" under the cursor.

import React, { useState } from "react";

function fmt(template, params) {
  return String(template).replace(/%\((\w+)\)s/g, (_, key) => String(params[key]));
}

function splitList(text) {
  return text
    .split(/[,，\n]/)
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

function toNumber(text) {
  if (text === "") return undefined;
  const n = Number(text);
  return Number.isNaN(n) ? text : n;
}

function isGroup(node) {
  return node && typeof node === "object" && Array.isArray(node.conditions);
}

// A comma-separated list typed as text: the text is the field's own until it is edited elsewhere.
function ListInput({ value, onChange, ...rest }) {
  const joined = Array.isArray(value) ? value.join(", ") : "";
  const [text, setText] = useState(joined);
  const shown = splitList(text).join(", ") === joined ? text : joined;
  return (
    <input
      type="text"
      {...rest}
      value={shown}
      onChange={(e) => {
        setText(e.target.value);
        const items = splitList(e.target.value);
        onChange(items.length ? items : undefined);
      }}
    />
  );
}

function NumberInput({ value, onChange, integer, min, ...rest }) {
  return (
    <input
      type="number"
      step={integer ? "1" : "any"}
      min={min}
      {...rest}
      value={value ?? ""}
      onChange={(e) => onChange(toNumber(e.target.value))}
    />
  );
}

// --- The segment rule --------------------------------------------------------------------------------

export function RuleEditor({ id, value, onChange, builder, problem }) {
  const { schema, labels: L } = builder;
  const fields = new Map(schema.fields.map((f) => [f.key, f]));
  const rule = isGroup(value) ? value : { op: "and", conditions: [] };
  return (
    <div className="jd-rule" id={id} data-testid="rule-editor" aria-invalid={problem ? "true" : undefined}>
      <RuleGroup group={rule} loc={[]} onChange={onChange} onRemove={null} L={L} schema={schema} fields={fields} idBase={id} />
    </div>
  );
}

function RuleGroup({ group, loc, onChange, onRemove, L, schema, fields, idBase }) {
  const number = loc.length ? loc[loc.length - 1] + 1 : 1;
  const groupLabel = fmt(L.group, { n: number });
  const opId = `${idBase}-op-${loc.join("-") || "root"}`;
  const children = group.conditions || [];
  const setChild = (i, next) => onChange({ ...group, conditions: children.map((c, j) => (j === i ? next : c)) });
  const removeChild = (i) => onChange({ ...group, conditions: children.filter((_, j) => j !== i) });
  return (
    <fieldset className="jd-rule-group" data-loc={loc.join(".")}>
      <legend>
        <span className="jd-rule-label">{groupLabel}</span>{" "}
        <label className="jd-visually-hidden" htmlFor={opId}>
          {`${groupLabel}: ${L.all} / ${L.any}`}
        </label>
        <select id={opId} value={group.op === "or" ? "or" : "and"} onChange={(e) => onChange({ ...group, op: e.target.value })}>
          <option value="and">{L.all}</option>
          <option value="or">{L.any}</option>
        </select>
        {onRemove && (
          <button type="button" className="jd-small jd-remove" onClick={onRemove} aria-label={`${L.remove}: ${groupLabel}`}>
            {L.remove}
          </button>
        )}
      </legend>
      {children.map((child, i) =>
        isGroup(child) ? (
          <RuleGroup
            key={i}
            group={child}
            loc={[...loc, i]}
            onChange={(next) => setChild(i, next)}
            onRemove={() => removeChild(i)}
            L={L}
            schema={schema}
            fields={fields}
            idBase={idBase}
          />
        ) : (
          <RuleCondition
            key={i}
            cond={child && typeof child === "object" ? child : { field: "" }}
            loc={[...loc, i]}
            onChange={(next) => setChild(i, next)}
            onRemove={() => removeChild(i)}
            L={L}
            schema={schema}
            fields={fields}
            idBase={idBase}
          />
        ),
      )}
      {children.length === 0 && <p className="jd-help">{L.empty_rule}</p>}
      <div className="jd-rule-actions">
        <button type="button" className="jd-small" data-action="add-condition" onClick={() => onChange({ ...group, conditions: [...children, { field: "" }] })}>
          + {L.add_condition}
        </button>
        <button
          type="button"
          className="jd-small"
          data-action="add-group"
          onClick={() => onChange({ ...group, conditions: [...children, { op: "and", conditions: [{ field: "" }] }] })}
        >
          + {L.add_group}
        </button>
      </div>
    </fieldset>
  );
}

function RuleCondition({ cond, loc, onChange, onRemove, L, schema, fields, idBase }) {
  const field = fields.get(cond.field);
  const label = fmt(L.condition, { n: loc[loc.length - 1] + 1 });
  const base = `${idBase}-c-${loc.join("-")}`;
  const operator = field ? field.operators.find((o) => o.key === cond.operator) || field.operators[0] : null;
  const set = (key, v) => {
    const next = { ...cond };
    if (v === undefined || v === "") delete next[key];
    else next[key] = v;
    onChange(next);
  };
  const params = field ? Object.fromEntries(field.params.map((p) => [p.name, p])) : {};
  return (
    <div className="jd-rule-condition" role="group" aria-label={label} data-loc={loc.join(".")}>
      <div className="jd-rule-head">
        <span className="jd-rule-label" aria-hidden="true">
          {label}
        </span>
        <button type="button" className="jd-small jd-remove" onClick={onRemove} aria-label={`${L.remove}: ${label}`}>
          {L.remove}
        </button>
      </div>
      <div className="jd-rule-row">
        <label className="jd-visually-hidden" htmlFor={`${base}-field`}>
          {`${label}: ${L.choose_field}`}
        </label>
        <select
          id={`${base}-field`}
          data-role="field"
          value={cond.field || ""}
          onChange={(e) => {
            const next = fields.get(e.target.value);
            onChange(next ? { field: e.target.value, operator: next.operators[0].key } : { field: e.target.value });
          }}
        >
          <option value="">{L.choose_field}</option>
          {cond.field && !field && <option value={cond.field}>{fmt(L.unknown_field, { field: cond.field })}</option>}
          {schema.groups.map((g) => {
            const options = schema.fields.filter((f) => f.group === g.key);
            if (!options.length) return null;
            return (
              <optgroup key={g.key} label={g.label}>
                {options.map((f) => (
                  <option key={f.key} value={f.key}>
                    {f.label}
                  </option>
                ))}
              </optgroup>
            );
          })}
        </select>
      </div>
      {field && (
        <div className="jd-rule-row">
          {field.params
            .filter((p) => p.type !== "window" && p.type !== "properties")
            .map((p) => (
              <ParamInput key={p.name} param={p} value={cond[p.name]} onChange={(v) => set(p.name, v)} L={L} id={`${base}-${p.name}`} />
            ))}
          <label className="jd-visually-hidden" htmlFor={`${base}-operator`}>
            {`${label}: ${L.operator}`}
          </label>
          <select
            id={`${base}-operator`}
            data-role="operator"
            value={operator.key}
            onChange={(e) => {
              const after = field.operators.find((o) => o.key === e.target.value);
              const next = { ...cond, operator: e.target.value };
              if (after.input.type !== operator.input.type) delete next.value;
              onChange(next);
            }}
          >
            {field.operators.map((o) => (
              <option key={o.key} value={o.key}>
                {o.label}
              </option>
            ))}
          </select>
          <ValueInput input={operator.input} value={cond.value} onChange={(v) => set("value", v)} L={L} id={`${base}-value`} label={`${label}: ${L.value}`} />
        </div>
      )}
      {field && params.window && <WindowInput param={params.window} value={cond.window} onChange={(v) => set("window", v)} L={L} id={`${base}-window`} />}
      {field && params.properties && (
        <PropertiesInput param={params.properties} value={cond.properties} onChange={(v) => set("properties", v)} L={L} id={`${base}-props`} />
      )}
    </div>
  );
}

function ParamInput({ param, value, onChange, L, id }) {
  if (param.type === "choice") {
    return (
      <span className="jd-rule-param">
        <label htmlFor={id}>{param.label}</label>
        <select id={id} value={value ?? ""} onChange={(e) => onChange(e.target.value || undefined)}>
          <option value="">{param.required ? L.choose_field : L.any_channel}</option>
          {param.choices.map(([v, label]) => (
            <option key={v} value={v}>
              {label}
            </option>
          ))}
        </select>
      </span>
    );
  }
  const suggestions = param.suggestions || (param.choices || []).map((c) => c[0]);
  return (
    <span className="jd-rule-param">
      <label htmlFor={id}>{param.label}</label>
      <input id={id} type="text" list={suggestions.length ? `${id}-list` : undefined} value={value ?? ""} onChange={(e) => onChange(e.target.value.trim() || undefined)} />
      {suggestions.length > 0 && (
        <datalist id={`${id}-list`}>
          {suggestions.map((s) => (
            <option key={s} value={s} />
          ))}
        </datalist>
      )}
    </span>
  );
}

function ValueInput({ input, value, onChange, L, id, label }) {
  switch (input.type) {
    case "none":
      return null;
    case "text":
      return <input id={id} type="text" aria-label={label} value={value ?? ""} onChange={(e) => onChange(e.target.value === "" ? undefined : e.target.value)} />;
    case "text_list":
      return (
        <>
          <ListInput id={id} aria-label={label} placeholder={L.values_hint} value={value} onChange={onChange} list={input.suggestions?.length ? `${id}-list` : undefined} />
          {input.suggestions?.length > 0 && (
            <datalist id={`${id}-list`}>
              {input.suggestions.map((s) => (
                <option key={s} value={s} />
              ))}
            </datalist>
          )}
        </>
      );
    case "number":
    case "integer":
      return <NumberInput id={id} aria-label={label} integer={input.type === "integer"} value={value} onChange={onChange} />;
    case "days":
      return (
        <span className="jd-rule-inline">
          <NumberInput id={id} aria-label={label} integer min={1} value={value} onChange={onChange} /> {L.days}
        </span>
      );
    case "number_pair":
    case "integer_pair": {
      const pair = Array.isArray(value) ? value : [undefined, undefined];
      const setAt = (i) => (v) => {
        const next = [...pair];
        next[i] = v;
        onChange(next[0] === undefined && next[1] === undefined ? undefined : next);
      };
      const integer = input.type === "integer_pair";
      return (
        <span className="jd-rule-inline">
          <NumberInput id={id} aria-label={`${label} 1`} integer={integer} value={pair[0]} onChange={setAt(0)} /> {L.and}{" "}
          <NumberInput aria-label={`${label} 2`} integer={integer} value={pair[1]} onChange={setAt(1)} />
        </span>
      );
    }
    case "date":
      return <input id={id} type="date" aria-label={label} value={value || ""} onChange={(e) => onChange(e.target.value || undefined)} />;
    case "date_pair": {
      const pair = Array.isArray(value) ? value : ["", ""];
      const setAt = (i) => (e) => {
        const next = [...pair];
        next[i] = e.target.value;
        onChange(next[0] || next[1] ? next : undefined);
      };
      return (
        <span className="jd-rule-inline">
          <input id={id} type="date" aria-label={`${label} 1`} value={pair[0] || ""} onChange={setAt(0)} /> {L.and}{" "}
          <input type="date" aria-label={`${label} 2`} value={pair[1] || ""} onChange={setAt(1)} />
        </span>
      );
    }
    case "choices": {
      const chosen = new Set((Array.isArray(value) ? value : []).map(String));
      const toggle = (v) => {
        const next = new Set(chosen);
        if (next.has(String(v))) next.delete(String(v));
        else next.add(String(v));
        const values = input.choices.filter(([c]) => next.has(String(c))).map(([c]) => c);
        onChange(values.length ? values : undefined);
      };
      return (
        <fieldset className="jd-rule-choices" id={id}>
          <legend className="jd-visually-hidden">{label}</legend>
          {input.choices.map(([v, text]) => (
            <label key={v}>
              <input type="checkbox" checked={chosen.has(String(v))} onChange={() => toggle(v)} /> {text}
            </label>
          ))}
        </fieldset>
      );
    }
    default:
      return null;
  }
}

function WindowInput({ param, value, onChange, L, id }) {
  const w = value && typeof value === "object" ? value : { kind: "all_time" };
  return (
    <div className="jd-rule-row">
      <label htmlFor={id}>{param.label}</label>
      <select
        id={id}
        value={w.kind}
        onChange={(e) => {
          const kind = e.target.value;
          onChange(kind === "all_time" ? undefined : kind === "last_days" ? { kind, days: 30 } : { kind, from: "", to: "" });
        }}
      >
        <option value="all_time">{L.any_time}</option>
        <option value="last_days">{L.last_days}</option>
        <option value="between">{L.between}</option>
      </select>
      {w.kind === "last_days" && (
        <span className="jd-rule-inline">
          <NumberInput aria-label={`${param.label}: ${L.days}`} integer min={1} value={w.days} onChange={(v) => onChange({ ...w, days: v })} /> {L.days}
        </span>
      )}
      {w.kind === "between" && (
        <span className="jd-rule-inline">
          <input type="date" aria-label={`${param.label} 1`} value={w.from || ""} onChange={(e) => onChange({ ...w, from: e.target.value })} /> {L.and}{" "}
          <input type="date" aria-label={`${param.label} 2`} value={w.to || ""} onChange={(e) => onChange({ ...w, to: e.target.value })} />
        </span>
      )}
    </div>
  );
}

// The segment builder's own property filters of an events condition ({key, operator, value}).
function PropertiesInput({ param, value, onChange, L, id }) {
  const filters = Array.isArray(value) ? value : [];
  const update = (i, next) => {
    const all = filters.map((f, j) => (j === i ? next : f));
    onChange(all.length ? all : undefined);
  };
  return (
    <div className="jd-rule-props" id={id}>
      <span className="jd-rule-label">{param.label}</span>
      {filters.map((f, i) => {
        const noValue = f.operator === "is_set" || f.operator === "is_not_set";
        const numeric = ["gt", "gte", "lt", "lte"].includes(f.operator);
        const row = `${param.label} ${i + 1}`;
        return (
          <div className="jd-rule-row" key={i} role="group" aria-label={row}>
            <input type="text" aria-label={`${row}: ${L.property}`} placeholder={L.property} value={f.key || ""} onChange={(e) => update(i, { ...f, key: e.target.value.trim() })} />
            <select
              aria-label={`${row}: ${L.operator}`}
              value={f.operator || "eq"}
              onChange={(e) => {
                const next = { ...f, operator: e.target.value };
                if (e.target.value === "is_set" || e.target.value === "is_not_set") delete next.value;
                update(i, next);
              }}
            >
              {param.operators.map((o) => (
                <option key={o.key} value={o.key}>
                  {o.label}
                </option>
              ))}
            </select>
            {!noValue &&
              (f.operator === "in" ? (
                <ListInput aria-label={`${row}: ${L.value}`} placeholder={L.values_hint} value={f.value} onChange={(v) => update(i, { ...f, value: v ?? [] })} />
              ) : numeric ? (
                <NumberInput aria-label={`${row}: ${L.value}`} value={f.value} onChange={(v) => update(i, { ...f, value: v })} />
              ) : (
                <input type="text" aria-label={`${row}: ${L.value}`} placeholder={L.value} value={f.value ?? ""} onChange={(e) => update(i, { ...f, value: e.target.value })} />
              ))}
            <button type="button" className="jd-small jd-remove" aria-label={`${L.remove}: ${row}`} onClick={() => onChange(filters.filter((_, j) => j !== i).length ? filters.filter((_, j) => j !== i) : undefined)}>
              {L.remove}
            </button>
          </div>
        );
      })}
      <button type="button" className="jd-small" onClick={() => onChange([...filters, { key: "", operator: "eq", value: "" }])}>
        + {L.add_property}
      </button>
    </div>
  );
}

// --- An event's property filters (journeys' own: property / op / value) -------------------------------

export function FiltersEditor({ id, value, onChange, operators, properties, t, problemPrefix, problems }) {
  const filters = Array.isArray(value) ? value : [];
  const byOp = Object.fromEntries(operators.map((o) => [o.value, o]));
  const update = (i, next) => onChange(filters.map((f, j) => (j === i ? next : f)));
  const listId = `${id}-properties`;
  return (
    <div className="jd-filters" id={id} data-testid="filters-editor">
      {filters.length === 0 && <p className="jd-help">{t("filter_none")}</p>}
      {filters.map((f, i) => {
        const op = byOp[f.op || "eq"] || operators[0];
        const row = t("filter_row", { n: i + 1 });
        const bad = (problems || []).some((p) => p.field && p.field.startsWith(`${problemPrefix}.${i}`));
        return (
          <div className={`jd-filter${bad ? " has-problem" : ""}`} key={i} role="group" aria-label={row} data-filter={i + 1}>
            <input
              type="text"
              aria-label={`${row}: ${t("filter_property")}`}
              placeholder={t("filter_property")}
              list={properties.length ? listId : undefined}
              value={f.property ?? ""}
              aria-invalid={bad ? "true" : undefined}
              onChange={(e) => update(i, { ...f, property: e.target.value.trim() })}
            />
            <select
              aria-label={`${row}: ${t("filter_operator")}`}
              value={op.value}
              onChange={(e) => {
                const after = byOp[e.target.value];
                const next = { ...f, op: e.target.value };
                if (after.takes !== op.takes) {
                  if (after.takes === "none") delete next.value;
                  else next.value = after.takes === "list" ? [] : after.takes === "number" ? undefined : "";
                }
                update(i, next);
              }}
            >
              {operators.map((o) => (
                <option key={o.value} value={o.value}>
                  {o.label}
                </option>
              ))}
            </select>
            {op.takes === "list" && (
              <ListInput aria-label={`${row}: ${t("filter_value")}`} placeholder={t("filter_values_hint")} value={f.value} onChange={(v) => update(i, { ...f, value: v ?? [] })} />
            )}
            {op.takes === "number" && <NumberInput aria-label={`${row}: ${t("filter_value")}`} value={f.value} onChange={(v) => update(i, { ...f, value: v })} />}
            {op.takes === "text" && (
              <input type="text" aria-label={`${row}: ${t("filter_value")}`} placeholder={t("filter_value")} value={f.value ?? ""} onChange={(e) => update(i, { ...f, value: e.target.value })} />
            )}
            <button type="button" className="jd-small jd-remove" aria-label={`${t("remove")}: ${row}`} onClick={() => onChange(filters.filter((_, j) => j !== i))}>
              {t("remove")}
            </button>
          </div>
        );
      })}
      {properties.length > 0 && (
        <datalist id={listId}>
          {properties.map((p) => (
            <option key={p} value={p} />
          ))}
        </datalist>
      )}
      <button type="button" className="jd-small" data-action="add-filter" onClick={() => onChange([...filters, { property: "", op: "eq", value: "" }])}>
        + {t("filter_add")}
      </button>
    </div>
  );
}
