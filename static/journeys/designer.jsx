// The journey designer: a React Flow (@xyflow/react v12) canvas over one journey version's graph.
//
// Everything the page needs comes from the server in one JSON block (#journey-designer-data, rendered by
// journeys/admin with json_script): the graph and settings, the node-type catalogue (exits, config
// fields, choices such as templates and coupon programmes), the endpoints, the per-node counts and every
// label, already translated by Django. No user-facing text is written here, so the page speaks whatever
// language the admin speaks. The browser never decides whether a graph is valid: save and publish send
// it to the server, which answers with problems named by node, drawn on the nodes and listed.
//
// Built by `npm run build:designer` (esbuild) into static/journeys/build/, which is not committed.

import React, { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import {
  Background,
  Controls,
  Handle,
  MiniMap,
  Position,
  ReactFlow,
  ReactFlowProvider,
  addEdge,
  applyEdgeChanges,
  applyNodeChanges,
  useReactFlow,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import "./designer.css";
import { FiltersEditor, RuleEditor } from "./rule_editor.jsx";

const DRAG_MIME = "application/x-journey-node";
// Typing in a field records one undo step per field per pause, not one per keystroke.
const TYPING_COALESCE_MS = 1000;
const HISTORY_LIMIT = 200;
const COUNTS_REFRESH_MS = 15000;
const RESULTS_REFRESH_MS = 60000;

// --- Labels and the catalogue ----------------------------------------------------------------------

function makeT(labels) {
  // labels are Django's translations; a missing key shows the key, which a test would catch.
  return (key, params) => {
    let text = labels[key] ?? key;
    if (params) {
      for (const [name, value] of Object.entries(params)) text = text.replaceAll(`{${name}}`, String(value));
    }
    return text;
  };
}

function getPath(obj, path) {
  let cur = obj;
  for (const part of path.split(".")) {
    if (cur == null || typeof cur !== "object") return undefined;
    cur = cur[part];
  }
  return cur;
}

function setPath(obj, path, value) {
  const parts = path.split(".");
  const root = { ...(obj || {}) };
  let cur = root;
  for (let i = 0; i < parts.length - 1; i++) {
    const next = cur[parts[i]];
    cur[parts[i]] = next && typeof next === "object" && !Array.isArray(next) ? { ...next } : {};
    cur = cur[parts[i]];
  }
  if (value === undefined) delete cur[parts[parts.length - 1]];
  else cur[parts[parts.length - 1]] = value;
  return root;
}

function fieldVisible(field, config) {
  if (!field.show_if) return true;
  // A list of values, or "*": any value at all (the goal's filters once the goal names an event).
  return Object.entries(field.show_if).every(([path, allowed]) => {
    const value = getPath(config, path);
    return allowed === "*" ? value !== undefined && value !== null && value !== "" : allowed.includes(value);
  });
}

// A node's exits: fixed by its type, or (random split) one per branch of its config.
function exitsOf(spec, config) {
  if (!spec) return [];
  if (spec.dynamic_exits === "branches") {
    const branches = Array.isArray(config?.branches) ? config.branches : [];
    return branches.filter((b) => b && b.id).map((b) => ({ id: String(b.id), label: b.label || String(b.id) }));
  }
  return spec.exits || [];
}

// A problem's field is a path from the node ("config.duration.value", "exits.yes") or the journey
// ("settings.re_entry.days"); a panel field owns the problems at its path and under it.
function problemFor(problems, prefix, name) {
  const full = `${prefix}${name}`;
  return problems.find((p) => p.field && (p.field === full || p.field.startsWith(`${full}.`)));
}

// A problem as staff read it on the node and in the list: the field's label (or the exit's) first.
function describe(problem, spec, config, t) {
  const path = problem.field || "";
  if (spec && path.startsWith("config.")) {
    const name = path.slice("config.".length);
    const field = spec.fields.find((f) => name === f.name || name.startsWith(`${f.name}.`));
    if (field) return t("problem_at", { where: field.label, message: problem.message });
  }
  if (spec && path.startsWith("exits.")) {
    const exit = exitsOf(spec, config).find((e) => e.id === path.slice("exits.".length));
    if (exit) return t("problem_at", { where: exit.label, message: problem.message });
  }
  return problem.message;
}

// --- Graph <-> React Flow --------------------------------------------------------------------------

// A graph written elsewhere (a ready-made journey, the API, a test) may give every node the same
// position: then the nodes are laid out in columns by their distance from the entry, so none hides another.
function layoutIfStacked(nodes, edges) {
  const seen = new Set(nodes.map((n) => `${n.position.x},${n.position.y}`));
  if (seen.size === nodes.length) return nodes;
  const next = {};
  for (const e of edges) (next[e.source] ||= []).push(e.target);
  const depth = {};
  const start = nodes.find((n) => n.data.nodeType === "entry") || nodes[0];
  const queue = start ? [start.id] : [];
  if (start) depth[start.id] = 0;
  while (queue.length) {
    const id = queue.shift();
    for (const target of next[id] || []) {
      if (depth[target] === undefined) {
        depth[target] = depth[id] + 1;
        queue.push(target);
      }
    }
  }
  const maxDepth = Math.max(0, ...Object.values(depth));
  const rows = {};
  return nodes.map((n) => {
    const column = depth[n.id] ?? maxDepth + 1; // unreachable nodes: a column of their own at the end
    const row = (rows[column] = (rows[column] ?? -1) + 1);
    return { ...n, position: { x: column * 280, y: row * 160 } };
  });
}

function toFlow(graph) {
  const nodes = (graph?.nodes || []).map((n) => ({
    id: String(n.id),
    type: "journey",
    position: { x: Number(n.position?.x) || 0, y: Number(n.position?.y) || 0 },
    data: { nodeType: n.type, config: n.config || {} },
  }));
  const edges = (graph?.edges || []).map((e) => ({
    id: String(e.id),
    source: String(e.source),
    sourceHandle: e.source_handle ?? null,
    target: String(e.target),
  }));
  return { nodes: layoutIfStacked(nodes, edges), edges };
}

function toGraph(nodes, edges) {
  return {
    schema: 1,
    nodes: nodes.map((n) => ({
      id: n.id,
      type: n.data.nodeType,
      config: n.data.config || {},
      position: { x: Math.round(n.position.x), y: Math.round(n.position.y) },
    })),
    edges: edges.map((e) => ({ id: e.id, source: e.source, source_handle: e.sourceHandle, target: e.target })),
  };
}

function nextId(prefix, taken) {
  let i = 1;
  while (taken.has(`${prefix}${i}`)) i++;
  return `${prefix}${i}`;
}

// Selection is view state: undo/redo restores the document, not what was highlighted.
function strip(nodes, edges) {
  return {
    nodes: nodes.map(({ id, type, position, data }) => ({ id, type, position, data })),
    edges: edges.map(({ id, source, sourceHandle, target }) => ({ id, source, sourceHandle, target })),
  };
}

// --- The node on the canvas ------------------------------------------------------------------------

const DesignerContext = React.createContext(null);

function JourneyNode({ id, data, selected }) {
  const { catalogue, t, problemsByNode, counts } = React.useContext(DesignerContext);
  const spec = catalogue.byType[data.nodeType];
  const exits = exitsOf(spec, data.config);
  const problems = problemsByNode[id] || [];
  const count = counts[id];
  const classes = ["jd-node", `jd-node-${data.nodeType}`];
  if (selected) classes.push("is-selected");
  if (problems.length) classes.push("has-problems");
  return (
    <div className={classes.join(" ")} data-node-id={id} data-testid={`node-${id}`}>
      {data.nodeType !== "entry" && (
        <Handle type="target" position={Position.Left} id="in" aria-label={t("handle_in")} />
      )}
      <div className="jd-node-head">
        <span className="jd-node-type">{spec ? spec.label : data.nodeType}</span>
        <span className="jd-node-id">{id}</span>
      </div>
      {spec?.summary && <div className="jd-node-summary">{summarize(spec, data.config)}</div>}
      {count && (
        <div className="jd-node-counts" data-testid={`counts-${id}`}>
          <span data-count="entered">{t("count_entered")} {count.entered ?? 0}</span>
          <span data-count="waiting">{t("count_waiting")} {count.waiting ?? 0}</span>
          <span data-count="passed">{t("count_passed")} {count.passed ?? 0}</span>
          <span data-count="exited">{t("count_exited")} {count.exited ?? 0}</span>
        </div>
      )}
      {problems.length > 0 && (
        <ul className="jd-node-problems" role="alert">
          {problems.map((p, i) => (
            <li key={i}>{describe(p, spec, data.config, t)}</li>
          ))}
        </ul>
      )}
      <div className="jd-node-exits">
        {exits.map((exit, i) => (
          <div className="jd-exit" key={exit.id}>
            <span className="jd-exit-label">{exit.label}</span>
            <Handle
              type="source"
              position={Position.Right}
              id={exit.id}
              className="jd-exit-handle"
              data-exit={exit.id}
              aria-label={t("handle_exit", { exit: exit.label })}
              style={{ top: "auto" }}
            />
          </div>
        ))}
      </div>
    </div>
  );
}

// One line under the node's type, from the catalogue's summary paths (e.g. the template code).
function summarize(spec, config) {
  return spec.summary
    .map((path) => getPath(config, path))
    .filter((v) => v !== undefined && v !== null && v !== "")
    .map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v)))
    .join(" · ");
}

const nodeTypes = { journey: JourneyNode };

// --- Config fields ---------------------------------------------------------------------------------

function FieldInput({ field, value, onChange, t, problem, problems, problemPrefix, inputId, config }) {
  const common = { id: inputId, name: field.name, "aria-invalid": problem ? "true" : undefined };
  const { catalogue } = React.useContext(DesignerContext);
  switch (field.kind) {
    case "rule":
      return <RuleEditor id={inputId} value={value} onChange={onChange} builder={catalogue.rule_builder} problem={problem} />;
    case "filters": {
      const eventType = field.event_type_from ? getPath(config, field.event_type_from) : undefined;
      return (
        <FiltersEditor
          id={inputId}
          value={value}
          onChange={onChange}
          operators={catalogue.filter_operators || []}
          properties={(catalogue.event_properties || {})[eventType] || []}
          t={t}
          problems={problems}
          problemPrefix={`${problemPrefix}${field.name}`}
        />
      );
    }
    case "select":
      return (
        <select
          {...common}
          value={value ?? ""}
          onChange={(e) => {
            const v = e.target.value;
            onChange(v === "" ? undefined : field.coerce === "int" ? Number(v) : v);
          }}
        >
          <option value="">{t("choose")}</option>
          {(field.choices || []).map((c) => (
            <option key={c.value} value={c.value}>
              {c.label}
            </option>
          ))}
        </select>
      );
    case "number":
      return (
        <input
          {...common}
          type="number"
          value={value ?? ""}
          step={field.step ?? 1}
          onChange={(e) => onChange(e.target.value === "" ? undefined : Number(e.target.value))}
        />
      );
    case "checkbox":
      return <input {...common} type="checkbox" checked={!!value} onChange={(e) => onChange(e.target.checked)} />;
    case "time":
      return <input {...common} type="time" value={value ?? ""} onChange={(e) => onChange(e.target.value || undefined)} />;
    case "datetime":
      return (
        <input {...common} type="datetime-local" value={value ?? ""} onChange={(e) => onChange(e.target.value || undefined)} />
      );
    case "weekdays":
      return (
        <span className="jd-weekdays" id={inputId}>
          {(field.choices || []).map((c) => {
            const list = Array.isArray(value) ? value : [];
            const on = list.includes(Number(c.value));
            return (
              <label key={c.value}>
                <input
                  type="checkbox"
                  checked={on}
                  onChange={() => {
                    const next = on ? list.filter((d) => d !== Number(c.value)) : [...list, Number(c.value)].sort();
                    onChange(next.length ? next : undefined);
                  }}
                />
                {c.label}
              </label>
            );
          })}
        </span>
      );
    case "json":
      return <JsonInput {...common} value={value} onChange={onChange} t={t} />;
    case "branches":
      return <BranchesInput inputId={inputId} value={value} onChange={onChange} t={t} />;
    default:
      return (
        <>
          <input
            {...common}
            type="text"
            list={field.suggestions ? `${inputId}-list` : undefined}
            value={value ?? ""}
            onChange={(e) => onChange(e.target.value === "" ? undefined : e.target.value)}
          />
          {field.suggestions && (
            <datalist id={`${inputId}-list`}>
              {field.suggestions.map((v) => (
                <option key={v} value={v} />
              ))}
            </datalist>
          )}
        </>
      );
  }
}

// Filters and segment rules as JSON: kept as text until it parses, so a half-typed value is not lost.
function JsonInput({ id, name, value, onChange, t }) {
  const [text, setText] = useState(() => (value === undefined ? "" : JSON.stringify(value, null, 2)));
  const [bad, setBad] = useState(false);
  return (
    <>
      <textarea
        id={id}
        name={name}
        rows={4}
        value={text}
        aria-invalid={bad ? "true" : undefined}
        onChange={(e) => {
          setText(e.target.value);
          if (e.target.value.trim() === "") {
            setBad(false);
            onChange(undefined);
            return;
          }
          try {
            onChange(JSON.parse(e.target.value));
            setBad(false);
          } catch {
            setBad(true);
          }
        }}
      />
      {bad && <span className="jd-field-error">{t("json_invalid")}</span>}
    </>
  );
}

function BranchesInput({ inputId, value, onChange, t }) {
  const branches = Array.isArray(value) ? value : [];
  const update = (i, key, v) => onChange(branches.map((b, j) => (j === i ? { ...b, [key]: v } : b)));
  const taken = new Set(branches.map((b) => b.id));
  return (
    <div className="jd-branches" id={inputId}>
      {branches.map((b, i) => (
        <div className="jd-branch" key={i}>
          <input aria-label={t("branch_id")} value={b.id ?? ""} size={3} onChange={(e) => update(i, "id", e.target.value)} />
          <input aria-label={t("branch_label")} value={b.label ?? ""} onChange={(e) => update(i, "label", e.target.value)} />
          <input
            aria-label={t("branch_percent")}
            type="number"
            min={0}
            max={100}
            value={b.percent ?? ""}
            onChange={(e) => update(i, "percent", e.target.value === "" ? undefined : Number(e.target.value))}
          />
          <span>%</span>
          <button type="button" className="jd-small" onClick={() => onChange(branches.filter((_, j) => j !== i))}>
            {t("remove")}
          </button>
        </div>
      ))}
      <button
        type="button"
        className="jd-small"
        onClick={() => {
          let code = 97; // a, b, c ...
          while (taken.has(String.fromCharCode(code))) code++;
          const id = String.fromCharCode(code);
          onChange([...branches, { id, label: id.toUpperCase(), percent: 0 }]);
        }}
      >
        {t("add_branch")}
      </button>
    </div>
  );
}

function FieldRow({ field, config, onChange, t, problem, problems, problemPrefix, idPrefix }) {
  const inputId = `${idPrefix}-${field.name.replaceAll(".", "-")}`;
  // Editors made of several controls are a group named by the field's label; a single control has a label.
  const grouped = field.kind === "rule" || field.kind === "filters";
  return (
    <div
      className={`jd-field${problem ? " has-problem" : ""}${grouped ? " jd-field-group" : ""}`}
      data-field={field.name}
      role={grouped ? "group" : undefined}
      aria-labelledby={grouped ? `${inputId}-label` : undefined}
    >
      {grouped ? (
        <span className="jd-field-label" id={`${inputId}-label`}>
          {field.label}
          {field.required && <span className="jd-required"> *</span>}
        </span>
      ) : (
        <label htmlFor={inputId}>
          {field.label}
          {field.required && <span className="jd-required"> *</span>}
        </label>
      )}
      <FieldInput
        field={field}
        value={getPath(config, field.name)}
        onChange={(v) => onChange(field.name, v)}
        t={t}
        problem={problem}
        problems={problems}
        problemPrefix={problemPrefix}
        inputId={inputId}
        config={config}
      />
      {field.help && <span className="jd-help">{field.help}</span>}
      {problem && <span className="jd-field-error">{problem.message}</span>}
    </div>
  );
}

// --- The side panel --------------------------------------------------------------------------------

function NodePanel({ restored, node, nodes, edges, onConfig, onConnectExit, onDelete, t, catalogue, problems, readonly }) {
  const spec = catalogue.byType[node.data.nodeType];
  const config = node.data.config || {};
  const exits = exitsOf(spec, config);
  const visible = (spec?.fields || []).filter((f) => fieldVisible(f, config));
  const owned = new Set();
  for (const f of visible) {
    const p = problemFor(problems, "config.", f.name);
    if (p) owned.add(p);
  }
  for (const exit of exits) {
    const p = problemFor(problems, "exits.", exit.id);
    if (p) owned.add(p);
  }
  const general = problems.filter((p) => !owned.has(p));
  return (
    <section className="jd-panel" aria-labelledby="jd-panel-title" data-testid="node-panel">
      <h2 id="jd-panel-title">
        {spec ? spec.label : node.data.nodeType} <small>{node.id}</small>
      </h2>
      {spec?.help && <p className="jd-help">{spec.help}</p>}
      {general.length > 0 && (
        <ul className="jd-panel-problems">
          {general.map((p, i) => (
            <li key={i}>{p.message}</li>
          ))}
        </ul>
      )}
      <fieldset disabled={readonly}>
        {visible.map((f) => (
            <FieldRow
              key={`${node.id}-${f.name}-${restored}`}
              field={f}
              config={config}
              onChange={onConfig}
              t={t}
              problem={problemFor(problems, "config.", f.name)}
              problems={problems}
              problemPrefix="config."
              idPrefix={`jd-${node.id}`}
            />
        ))}
        {exits.length > 0 && (
          <div className="jd-exits-panel">
            <h3>{t("exits")}</h3>
            {/* The keyboard's way to connect: each exit's target chosen from a list. */}
            {exits.map((exit) => {
              const edge = edges.find((e) => e.source === node.id && e.sourceHandle === exit.id);
              const inputId = `jd-${node.id}-exit-${exit.id}`;
              const problem = problemFor(problems, "exits.", exit.id);
              return (
                <div className={`jd-field${problem ? " has-problem" : ""}`} key={exit.id} data-exit={exit.id}>
                  <label htmlFor={inputId}>{t("exit_goes_to", { exit: exit.label })}</label>
                  <select id={inputId} value={edge ? edge.target : ""} onChange={(e) => onConnectExit(node.id, exit.id, e.target.value)}>
                    <option value="">{t("not_connected")}</option>
                    {nodes
                      .filter((n) => n.id !== node.id && n.data.nodeType !== "entry")
                      .map((n) => (
                        <option key={n.id} value={n.id}>
                          {n.id} · {catalogue.byType[n.data.nodeType]?.label ?? n.data.nodeType}
                        </option>
                      ))}
                  </select>
                  {problem && <span className="jd-field-error">{problem.message}</span>}
                </div>
              );
            })}
          </div>
        )}
        <button type="button" className="jd-danger" onClick={() => onDelete(node.id)}>
          {t("delete_node")}
        </button>
      </fieldset>
    </section>
  );
}

function SettingsPanel({ restored, settings, fields, onChange, t, problems, readonly }) {
  return (
    <section className="jd-panel" aria-labelledby="jd-settings-title" data-testid="settings-panel">
      <h2 id="jd-settings-title">{t("journey_settings")}</h2>
      <p className="jd-help">{t("settings_help")}</p>
      <fieldset disabled={readonly}>
        {fields
          .filter((f) => fieldVisible(f, settings))
          .map((f) => (
            <FieldRow key={`${f.name}-${restored}`} field={f} config={settings} onChange={onChange} t={t} problem={problemFor(problems, "settings.", f.name)} problems={problems} problemPrefix="settings." idPrefix="jd-settings" />
          ))}
      </fieldset>
    </section>
  );
}

// --- The journey's results --------------------------------------------------------------------------

// Converted, and conversion and revenue against the holdout with their intervals: worded on the server
// (journeys/analytics.py), drawn here. "direction" marks a difference whose interval leaves out zero.
function ResultsBar({ results, t }) {
  return (
    <section className="jd-results" aria-labelledby="jd-results-title" data-testid="results">
      <h2 id="jd-results-title" className="jd-visually-hidden">
        {t("results_title")}
      </h2>
      <dl>
        {results.figures.map((f) => (
          <div key={f.key} className={`jd-result${f.direction ? ` is-${f.direction}` : ""}`} data-result={f.key}>
            <dt>{f.label}</dt>
            <dd>
              <strong>{f.value}</strong> <span>{f.detail}</span>
            </dd>
          </div>
        ))}
      </dl>
      <p className="jd-help">{results.counted}</p>
    </section>
  );
}

// --- The designer ----------------------------------------------------------------------------------

async function callJson(url, method, body, csrfToken) {
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { ok: response.ok, status: response.status, data };
}

function Designer({ boot }) {
  const t = useMemo(() => makeT(boot.labels), [boot.labels]);
  const catalogue = useMemo(() => {
    const byType = {};
    for (const spec of boot.catalogue.types) byType[spec.type] = spec;
    return { ...boot.catalogue, byType };
  }, [boot.catalogue]);
  const initial = useMemo(() => toFlow(boot.graph), [boot.graph]);
  const [nodes, setNodes] = useState(initial.nodes);
  const [edges, setEdges] = useState(initial.edges);
  const [settings, setSettings] = useState(boot.settings || {});
  const [problems, setProblems] = useState(boot.problems || []);
  const [counts, setCounts] = useState(boot.counts || {});
  const [results, setResults] = useState(null);
  const [status, setStatus] = useState({ kind: "idle", text: "" });
  const [version, setVersion] = useState(boot.version);
  const [dirty, setDirty] = useState(false);
  const readonly = !!version.readonly;
  const [selectedId, setSelectedId] = useState(null);
  const history = useRef({ past: [], future: [], lastKey: null, lastAt: 0 });
  const [, setHistoryTick] = useState(0);
  const [restored, setRestored] = useState(0);
  const wrapper = useRef(null);
  const flow = useReactFlow();

  // The live document, read by the history and the handlers without re-creating them on every change.
  const doc = useRef({ nodes, edges, settings });
  doc.current = { nodes, edges, settings };

  const remember = useCallback((key) => {
    const h = history.current;
    const now = Date.now();
    if (key && key === h.lastKey && now - h.lastAt < TYPING_COALESCE_MS) {
      h.lastAt = now;
      return;
    }
    const { nodes: n, edges: e, settings: s } = doc.current;
    h.past.push({ ...strip(n, e), settings: s });
    if (h.past.length > HISTORY_LIMIT) h.past.shift();
    h.future = [];
    h.lastKey = key || null;
    h.lastAt = now;
    setDirty(true);
    setHistoryTick((x) => x + 1);
  }, []);

  const restore = useCallback((from, to) => {
    const h = history.current;
    const snapshot = h[from].pop();
    if (!snapshot) return;
    const { nodes: n, edges: e, settings: s } = doc.current;
    h[to].push({ ...strip(n, e), settings: s });
    h.lastKey = null;
    setNodes(snapshot.nodes);
    setEdges(snapshot.edges);
    setSettings(snapshot.settings);
    setDirty(true);
    setHistoryTick((x) => x + 1);
    // Fields that keep their own text (JSON) are drawn afresh from the restored document.
    setRestored((x) => x + 1);
  }, []);
  const undo = useCallback(() => restore("past", "future"), [restore]);
  const redo = useCallback(() => restore("future", "past"), [restore]);

  useEffect(() => {
    const onKey = (event) => {
      const target = event.target;
      // Inside a text field, Ctrl+Z belongs to the field.
      if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
      if (!(event.ctrlKey || event.metaKey)) return;
      const key = event.key.toLowerCase();
      if (key === "z" && !event.shiftKey) {
        event.preventDefault();
        undo();
      } else if ((key === "z" && event.shiftKey) || key === "y") {
        event.preventDefault();
        redo();
      }
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [undo, redo]);

  useEffect(() => {
    const onBeforeUnload = (event) => {
      if (dirty) {
        event.preventDefault();
        event.returnValue = "";
      }
    };
    window.addEventListener("beforeunload", onBeforeUnload);
    return () => window.removeEventListener("beforeunload", onBeforeUnload);
  }, [dirty]);

  const onNodesChange = useCallback(
    (changes) => {
      if (readonly && changes.some((c) => c.type !== "select" && c.type !== "dimensions")) return;
      if (changes.some((c) => c.type === "remove")) remember();
      if (changes.some((c) => c.type === "position" && c.dragging === false)) setDirty(true);
      setNodes((ns) => applyNodeChanges(changes, ns));
      for (const c of changes) {
        if (c.type === "select" && c.selected) setSelectedId(c.id);
        if (c.type === "remove") setSelectedId((cur) => (cur === c.id ? null : cur));
      }
    },
    [remember, readonly],
  );
  const onEdgesChange = useCallback(
    (changes) => {
      if (readonly && changes.some((c) => c.type !== "select")) return;
      if (changes.some((c) => c.type === "remove")) remember();
      setEdges((es) => applyEdgeChanges(changes, es));
    },
    [remember, readonly],
  );
  const onNodeDragStart = useCallback(() => remember(), [remember]);

  const connect = useCallback(
    (source, sourceHandle, target) => {
      remember();
      setEdges((es) => {
        // One edge per exit: connecting an exit again moves its edge.
        const rest = es.filter((e) => !(e.source === source && e.sourceHandle === sourceHandle));
        if (!target) return rest;
        const id = nextId("e", new Set(es.map((e) => e.id)));
        return addEdge({ id, source, sourceHandle, target, targetHandle: "in" }, rest);
      });
    },
    [remember],
  );
  const onConnect = useCallback((c) => connect(c.source, c.sourceHandle, c.target), [connect]);
  const isValidConnection = useCallback((c) => c.source !== c.target, []);

  const addNode = useCallback(
    (nodeType, position) => {
      const spec = catalogue.byType[nodeType];
      if (!spec || readonly) return;
      remember();
      const id = nextId("n", new Set(doc.current.nodes.map((n) => n.id)));
      const config = structuredClone(spec.default_config || {});
      setNodes((ns) => [
        ...ns.map((n) => (n.selected ? { ...n, selected: false } : n)),
        { id, type: "journey", position, data: { nodeType, config }, selected: true },
      ]);
      setSelectedId(id);
      return id;
    },
    [catalogue, remember, readonly],
  );

  const onDragOver = useCallback((event) => {
    if (event.dataTransfer.types.includes(DRAG_MIME)) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    }
  }, []);
  const onDrop = useCallback(
    (event) => {
      const nodeType = event.dataTransfer.getData(DRAG_MIME);
      if (!nodeType) return;
      event.preventDefault();
      addNode(nodeType, flow.screenToFlowPosition({ x: event.clientX, y: event.clientY }));
    },
    [addNode, flow],
  );
  // From the keyboard (or a click), a palette entry lands in the middle of what is in view.
  const addFromPalette = useCallback(
    (nodeType) => {
      const box = wrapper.current.getBoundingClientRect();
      const offset = (doc.current.nodes.length % 5) * 24;
      const pos = flow.screenToFlowPosition({ x: box.left + box.width / 2 + offset, y: box.top + box.height / 2 + offset });
      const id = addNode(nodeType, pos);
      // The panel's first field takes the focus, so the new node is configured without the mouse.
      if (id) setTimeout(() => document.querySelector(".jd-side .jd-panel input, .jd-side .jd-panel select, .jd-side .jd-panel textarea")?.focus(), 0);
    },
    [addNode, flow],
  );

  const updateConfig = useCallback(
    (nodeId, path, value) => {
      remember(`config:${nodeId}:${path}`);
      setNodes((ns) =>
        ns.map((n) => (n.id === nodeId ? { ...n, data: { ...n.data, config: setPath(n.data.config, path, value) } } : n)),
      );
      if (path === "branches") {
        // A removed branch takes its edge with it.
        const ids = new Set((Array.isArray(value) ? value : []).map((b) => String(b.id)));
        setEdges((es) => es.filter((e) => e.source !== nodeId || ids.has(e.sourceHandle)));
      }
    },
    [remember],
  );
  const updateSettings = useCallback(
    (path, value) => {
      remember(`settings:${path}`);
      setSettings((s) => setPath(s, path, value));
    },
    [remember],
  );
  const deleteNode = useCallback(
    (nodeId) => {
      remember();
      setNodes((ns) => ns.filter((n) => n.id !== nodeId));
      setEdges((es) => es.filter((e) => e.source !== nodeId && e.target !== nodeId));
      setSelectedId(null);
    },
    [remember],
  );

  const applyAnswer = useCallback(
    (answer, okText) => {
      const data = answer.data || {};
      if (data.problems) setProblems(data.problems);
      if (data.version) setVersion(data.version);
      if (data.counts) setCounts(data.counts);
      if (answer.ok) {
        setDirty(false);
        const n = (data.problems || []).length;
        setStatus(n ? { kind: "warning", text: t("saved_with_problems", { count: n }) } : { kind: "ok", text: okText });
      } else {
        setStatus({ kind: "error", text: data.message || t("request_failed", { status: answer.status }) });
      }
      return answer.ok;
    },
    [t],
  );

  const save = useCallback(async () => {
    setStatus({ kind: "busy", text: t("saving") });
    const { nodes: n, edges: e, settings: s } = doc.current;
    try {
      const answer = await callJson(boot.urls.graph, "PUT", { graph: toGraph(n, e), settings: s, revision: version.revision }, boot.csrf_token);
      return applyAnswer(answer, t("saved"));
    } catch {
      setStatus({ kind: "error", text: t("network_error") });
      return false;
    }
  }, [boot, version, applyAnswer, t]);

  const publish = useCallback(async () => {
    if (dirty && !(await save())) return;
    setStatus({ kind: "busy", text: t("publishing") });
    try {
      const answer = await callJson(boot.urls.publish, "POST", { revision: version.revision }, boot.csrf_token);
      const ok = applyAnswer(answer, t("published"));
      if (!ok && answer.data?.problems?.length) setStatus({ kind: "error", text: t("publish_refused", { count: answer.data.problems.length }) });
    } catch {
      setStatus({ kind: "error", text: t("network_error") });
    }
  }, [boot, dirty, save, version, applyAnswer, t]);

  // A live version's counts: fetched as soon as the canvas is up (the page itself does not wait for them:
  // over a million enrollments they take longer than drawing the canvas), then every COUNTS_REFRESH_MS.
  useEffect(() => {
    if (version.status === "draft" || !boot.urls.counts) return undefined;
    const refresh = async () => {
      if (document.hidden) return;
      try {
        const answer = await callJson(boot.urls.counts, "GET", undefined, boot.csrf_token);
        if (answer.ok && answer.data?.counts) setCounts(answer.data.counts);
      } catch {
        // The next tick tries again; the counts on screen stay as they were.
      }
    };
    refresh();
    const timer = setInterval(refresh, COUNTS_REFRESH_MS);
    return () => clearInterval(timer);
  }, [boot, version.status]);

  // The journey's results are read after the canvas is drawn (over many enrollments they take a while),
  // then again every RESULTS_REFRESH_MS while the page is in view.
  useEffect(() => {
    if (!boot.urls.results) return undefined;
    const load = async () => {
      if (document.hidden) return;
      try {
        const answer = await callJson(boot.urls.results, "GET", undefined, boot.csrf_token);
        if (answer.ok && answer.data?.results) setResults(answer.data.results);
      } catch {
        // The next tick tries again.
      }
    };
    load();
    const timer = setInterval(load, RESULTS_REFRESH_MS);
    return () => clearInterval(timer);
  }, [boot]);

  // A published version is frozen: editing it starts a new draft (the server copies it), opened here.
  const newDraft = useCallback(async () => {
    try {
      const answer = await callJson(boot.urls.new_draft, "POST", {}, boot.csrf_token);
      if (answer.ok && answer.data?.designer_url) window.location.assign(answer.data.designer_url);
      else setStatus({ kind: "error", text: answer.data?.message || t("request_failed", { status: answer.status }) });
    } catch {
      setStatus({ kind: "error", text: t("network_error") });
    }
  }, [boot, t]);

  const problemsByNode = useMemo(() => {
    const by = {};
    for (const p of problems) if (p.node_id) (by[p.node_id] ||= []).push(p);
    return by;
  }, [problems]);
  const styledEdges = useMemo(() => {
    const bad = new Set(problems.filter((p) => p.edge_id).map((p) => p.edge_id));
    return edges.map((e) => (bad.has(e.id) ? { ...e, className: "has-problems", animated: true } : e));
  }, [edges, problems]);

  const selected = nodes.find((n) => n.id === selectedId) || null;
  const focusNode = useCallback(
    (nodeId) => {
      const node = doc.current.nodes.find((n) => n.id === nodeId);
      if (!node) return;
      setNodes((ns) => ns.map((n) => ({ ...n, selected: n.id === nodeId })));
      setSelectedId(nodeId);
      flow.setCenter(node.position.x + 90, node.position.y + 40, { zoom: flow.getZoom(), duration: 200 });
    },
    [flow],
  );

  const context = useMemo(() => ({ catalogue, t, problemsByNode, counts }), [catalogue, t, problemsByNode, counts]);
  const ariaLabelConfig = boot.aria_labels || undefined;
  const h = history.current;

  return (
    <DesignerContext.Provider value={context}>
      <div className="jd-toolbar" role="toolbar" aria-label={t("toolbar")}>
        <span className={`jd-version jd-status-${version.status}`} data-testid="version-status">
          {t("version_label", { number: version.number })} · {version.status_label}
        </span>
        <button type="button" onClick={undo} disabled={!h.past.length} title="Ctrl+Z" data-testid="undo">
          {t("undo")}
        </button>
        <button type="button" onClick={redo} disabled={!h.future.length} title="Ctrl+Shift+Z" data-testid="redo">
          {t("redo")}
        </button>
        <button type="button" onClick={save} disabled={readonly} data-testid="save">
          {t("save")}
        </button>
        <button type="button" className="jd-primary" onClick={publish} disabled={readonly} data-testid="publish">
          {t("publish")}
        </button>
        <span className={`jd-status jd-status-${status.kind}`} role="status" aria-live="polite" data-testid="status">
          {status.text}
        </span>
        {dirty && <span className="jd-dirty">{t("unsaved_changes")}</span>}
        {readonly && boot.urls.new_draft && (
          <span className="jd-readonly">
            {t("readonly_note")}{" "}
            <button type="button" onClick={newDraft} data-testid="new-draft">
              {t("new_draft")}
            </button>
          </span>
        )}
      </div>
      {results && <ResultsBar results={results} t={t} />}
      <div className="jd-layout">
        <nav className="jd-palette" aria-label={t("palette")}>
          <h2>{t("palette")}</h2>
          <p className="jd-help">{t("palette_help")}</p>
          <ul>
            {catalogue.types.map((spec) => (
              <li key={spec.type}>
                <button
                  type="button"
                  className={`jd-palette-item jd-node-${spec.type}`}
                  draggable={!readonly}
                  disabled={readonly}
                  data-node-type={spec.type}
                  title={spec.help || spec.label}
                  onDragStart={(event) => {
                    event.dataTransfer.setData(DRAG_MIME, spec.type);
                    event.dataTransfer.effectAllowed = "copy";
                  }}
                  onClick={() => addFromPalette(spec.type)}
                >
                  {spec.label}
                </button>
              </li>
            ))}
          </ul>
        </nav>
        <div className="jd-canvas" ref={wrapper} onDragOver={onDragOver} onDrop={onDrop} data-testid="canvas">
          <ReactFlow
            nodes={nodes}
            edges={styledEdges}
            nodeTypes={nodeTypes}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onConnect={onConnect}
            onNodeDragStart={onNodeDragStart}
            onPaneClick={() => setSelectedId(null)}
            isValidConnection={isValidConnection}
            deleteKeyCode={readonly ? null : ["Delete", "Backspace"]}
            nodesDraggable={!readonly}
            nodesConnectable={!readonly}
            fitView
            fitViewOptions={{ padding: 0.15, maxZoom: 1, minZoom: 0.35 }}
            minZoom={0.2}
            ariaLabelConfig={ariaLabelConfig}
            proOptions={{ hideAttribution: false }}
          >
            <Background />
            <Controls />
            <MiniMap pannable zoomable ariaLabel={ariaLabelConfig?.["minimap.ariaLabel"]} />
          </ReactFlow>
        </div>
        <aside className="jd-side">
          {selected ? (
            <NodePanel
              restored={restored}
              node={selected}
              nodes={nodes}
              edges={edges}
              onConfig={(path, value) => updateConfig(selected.id, path, value)}
              onConnectExit={connect}
              onDelete={deleteNode}
              t={t}
              catalogue={catalogue}
              problems={problemsByNode[selected.id] || []}
              readonly={readonly}
            />
          ) : (
            <SettingsPanel
              restored={restored}
              settings={settings}
              fields={catalogue.settings_fields || []}
              onChange={updateSettings}
              t={t}
              problems={problems.filter((p) => !p.node_id && !p.edge_id)}
              readonly={readonly}
            />
          )}
          <section className="jd-problems" aria-labelledby="jd-problems-title" data-testid="problems">
            <h2 id="jd-problems-title">{t("problems_title", { count: problems.length })}</h2>
            {problems.length === 0 ? (
              <p className="jd-help">{t("no_problems")}</p>
            ) : (
              <ul>
                {problems.map((p, i) => (
                  <li key={i} data-node={p.node_id || ""}>
                    {p.node_id ? (
                      <button type="button" className="jd-link" onClick={() => focusNode(p.node_id)}>
                        {p.node_id}
                      </button>
                    ) : null}{" "}
                    {describe(p, p.node_id && catalogue.byType[nodes.find((n) => n.id === p.node_id)?.data.nodeType], nodes.find((n) => n.id === p.node_id)?.data.config, t)}
                  </li>
                ))}
              </ul>
            )}
          </section>
        </aside>
      </div>
    </DesignerContext.Provider>
  );
}

function mount() {
  const root = document.getElementById("journey-designer");
  const data = document.getElementById("journey-designer-data");
  if (!root || !data) return;
  const boot = JSON.parse(data.textContent);
  const started = performance.now();
  createRoot(root).render(
    <ReactFlowProvider>
      <Designer boot={boot} />
    </ReactFlowProvider>,
  );
  // The open-time figures (BENCHMARKS.md), read by the browser test once every node is drawn: from the
  // page's navigation start (what staff wait for) and from this script's start (the canvas's own share).
  const waitDrawn = () => {
    // React Flow hides a node until it has measured it, and draws an edge once both ends are measured.
    const shown = [...root.querySelectorAll(".react-flow__node")].filter((n) => n.style.visibility !== "hidden");
    const edges = root.querySelectorAll(".react-flow__edge").length;
    if (shown.length >= (boot.graph?.nodes || []).length && edges >= (boot.graph?.edges || []).length) {
      root.dataset.openedMs = String(Math.round(performance.now()));
      root.dataset.mountMs = String(Math.round(performance.now() - started));
      root.dataset.ready = "true";
    } else requestAnimationFrame(waitDrawn);
  };
  requestAnimationFrame(waitDrawn);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
else mount();
