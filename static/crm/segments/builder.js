/*
 * Segment rule builder for the admin: edits the rule JSON held in a hidden textarea through a form of
 * nested AND/OR groups and conditions, and shows the live member count and a sample beside it.
 *
 * What it can offer comes from the server (crm.segments.fields.builder_schema, json_script
 * "segment-builder-schema"), and so do all its words (json_script "segment-builder-labels"), so this
 * file holds no field list and no user-facing string. The server validates every rule again; the
 * builder only keeps the shape right and shows the server's messages beside the condition they name.
 */
(function () {
  "use strict";

  const PREVIEW_DELAY_MS = 400;

  function fmt(template, params) {
    return template.replace(/%\((\w+)\)s/g, (_, key) => String(params[key]));
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
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

  class Builder {
    constructor(root) {
      this.root = root;
      this.input = document.getElementById(root.dataset.input);
      this.previewUrl = root.dataset.previewUrl;
      this.schema = JSON.parse(document.getElementById("segment-builder-schema").textContent);
      this.L = JSON.parse(document.getElementById("segment-builder-labels").textContent);
      this.fields = new Map(this.schema.fields.map((f) => [f.key, f]));
      this.tree = root.querySelector(".segment-builder-tree");
      this.countBox = root.querySelector(".segment-builder-count");
      this.errorBox = root.querySelector(".segment-builder-errors");
      this.sampleBox = root.querySelector(".segment-builder-sample");
      this.jsonBox = root.querySelector(".segment-builder-json pre");
      this.timer = null;
      this.inflight = null;
      this.rule = this.parse(this.input.value);
      this.render();
    }

    parse(text) {
      try {
        const rule = JSON.parse(text);
        if (rule && typeof rule === "object" && Array.isArray(rule.conditions)) return rule;
      } catch (e) {
        /* an unreadable value starts an empty rule; the server keeps refusing the old one */
      }
      return { op: "and", conditions: [] };
    }

    // --- state -> textarea, preview -----------------------------------------------------------------

    changed() {
      const json = JSON.stringify(this.rule);
      this.input.value = json;
      this.jsonBox.textContent = JSON.stringify(this.rule, null, 2);
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.preview(), PREVIEW_DELAY_MS);
    }

    render() {
      this.tree.replaceChildren(this.renderGroup(this.rule, [], null));
      this.changed();
    }

    async preview() {
      if (!this.previewUrl) return;
      if (this.inflight) this.inflight.abort();
      const controller = new AbortController();
      this.inflight = controller;
      this.countBox.textContent = this.L.counting;
      this.countBox.classList.add("is-counting");
      let response;
      let body;
      try {
        response = await fetch(this.previewUrl, {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
          body: JSON.stringify({ rule: this.rule }),
          signal: controller.signal,
          credentials: "same-origin",
        });
        body = await response.json();
      } catch (e) {
        if (e.name === "AbortError") return;
        this.showFailure();
        return;
      } finally {
        if (this.inflight === controller) this.inflight = null;
      }
      this.countBox.classList.remove("is-counting");
      this.showResult(body);
    }

    showFailure() {
      this.countBox.classList.remove("is-counting");
      this.countBox.textContent = this.L.failed;
    }

    showResult(body) {
      this.root.querySelectorAll(".sb-invalid").forEach((node) => node.classList.remove("sb-invalid"));
      this.root.querySelectorAll(".sb-message").forEach((node) => node.remove());
      this.errorBox.replaceChildren();
      this.sampleBox.replaceChildren();
      if (body.errors && body.errors.length) {
        this.countBox.textContent = "";
        this.errorBox.append(el("li", { text: this.L.errors }));
        for (const error of body.errors) {
          this.errorBox.append(el("li", { text: error.text }));
          const node = this.tree.querySelector(`[data-loc="${(error.loc || []).join(".")}"]`);
          if (node) {
            node.classList.add("sb-invalid");
            node.append(el("div", { class: "sb-message errornote", text: error.message }));
          }
        }
        return;
      }
      if (body.warning) {
        this.countBox.textContent = body.warning;
        return;
      }
      const n = body.count;
      this.countBox.textContent =
        n === 0 ? this.L.no_members : n === 1 ? this.L.one_member : fmt(this.L.members, { n: n.toLocaleString() });
      this.countBox.dataset.count = String(n);
      if (!this.rule.conditions.length) this.errorBox.append(el("li", { class: "help", text: this.L.empty_rule }));
      if (body.sample && body.sample.length) {
        const head = el("tr", {}, ...["name", "email", "phone", "city"].map((k) => el("th", { text: this.L[k] })));
        const rows = body.sample.map((row) =>
          el(
            "tr",
            {},
            el("td", {}, row.url ? el("a", { href: row.url, text: row.name || `#${row.id}` }) : row.name || `#${row.id}`),
            el("td", { text: row.email }),
            el("td", { text: row.phone }),
            el("td", { text: row.city }),
          ),
        );
        this.sampleBox.append(
          el("summary", { text: fmt(this.L.sample, { n: body.sample.length }) }),
          el("table", {}, el("thead", {}, head), el("tbody", {}, rows)),
        );
      }
    }

    // --- groups ------------------------------------------------------------------------------------

    renderGroup(group, loc, parent) {
      const number = loc.length ? loc[loc.length - 1] + 1 : 1;
      const op = el(
        "select",
        {
          class: "sb-op",
          "aria-label": this.L.all + " / " + this.L.any,
          onchange: (e) => {
            group.op = e.target.value;
            this.changed();
          },
        },
        el("option", { value: "and", text: this.L.all, selected: group.op !== "or" }),
        el("option", { value: "or", text: this.L.any, selected: group.op === "or" }),
      );
      if (group.op !== "or") group.op = "and";
      const children = el("div", { class: "sb-children" });
      group.conditions.forEach((child, i) => {
        const childLoc = [...loc, i];
        children.append(
          child && typeof child === "object" && "conditions" in child
            ? this.renderGroup(child, childLoc, group)
            : this.renderCondition(child, childLoc, group),
        );
      });
      const actions = el(
        "div",
        { class: "sb-actions" },
        el("button", {
          type: "button",
          class: "button sb-add-condition",
          text: "+ " + this.L.add_condition,
          onclick: () => {
            group.conditions.push({ field: "" });
            this.render();
          },
        }),
        el("button", {
          type: "button",
          class: "button sb-add-group",
          text: "+ " + this.L.add_group,
          onclick: () => {
            group.conditions.push({ op: "and", conditions: [{ field: "" }] });
            this.render();
          },
        }),
      );
      const header = el(
        "div",
        { class: "sb-header" },
        el("span", { class: "sb-label", text: fmt(this.L.group, { n: number }) }),
        op,
        parent
          ? el("button", {
              type: "button",
              class: "sb-remove",
              title: this.L.remove,
              "aria-label": this.L.remove,
              text: "×",
              onclick: () => {
                parent.conditions.splice(parent.conditions.indexOf(group), 1);
                this.render();
              },
            })
          : null,
      );
      return el("div", { class: "sb-group", "data-loc": loc.join(".") }, header, children, actions);
    }

    // --- conditions --------------------------------------------------------------------------------

    renderCondition(cond, loc, parent) {
      if (!cond || typeof cond !== "object") {
        cond = { field: "" };
        parent.conditions[loc[loc.length - 1]] = cond;
      }
      const field = this.fields.get(cond.field);
      const row = el("div", { class: "sb-condition", "data-loc": loc.join(".") });
      row.append(el("span", { class: "sb-label", text: fmt(this.L.condition, { n: loc[loc.length - 1] + 1 }) }));
      row.append(this.fieldSelect(cond, field));
      if (field) {
        const params = Object.fromEntries(field.params.map((p) => [p.name, p]));
        for (const p of field.params) {
          if (p.type !== "window" && p.type !== "properties") row.append(this.paramInput(cond, p));
        }
        row.append(this.operatorSelect(cond, field));
        const operator = field.operators.find((o) => o.key === cond.operator);
        row.append(this.valueInput(cond, operator.input));
        if (params.window) row.append(this.windowInput(cond, params.window));
        if (params.properties) row.append(this.propertiesInput(cond, params.properties));
      }
      row.append(
        el("button", {
          type: "button",
          class: "sb-remove",
          title: this.L.remove,
          "aria-label": this.L.remove,
          text: "×",
          onclick: () => {
            parent.conditions.splice(parent.conditions.indexOf(cond), 1);
            this.render();
          },
        }),
      );
      return row;
    }

    fieldSelect(cond, field) {
      const select = el("select", {
        class: "sb-field",
        "aria-label": this.L.choose_field,
        onchange: (e) => {
          const next = this.fields.get(e.target.value);
          for (const key of Object.keys(cond)) delete cond[key];
          cond.field = e.target.value;
          if (next) cond.operator = next.operators[0].key;
          this.render();
        },
      });
      select.append(el("option", { value: "", text: this.L.choose_field, selected: !cond.field }));
      if (cond.field && !field) {
        select.append(el("option", { value: cond.field, text: fmt(this.L.unknown_field, { field: cond.field }), selected: true }));
      }
      for (const group of this.schema.groups) {
        const options = this.schema.fields.filter((f) => f.group === group.key);
        if (!options.length) continue;
        select.append(
          el(
            "optgroup",
            { label: group.label },
            options.map((f) => el("option", { value: f.key, text: f.label, selected: f.key === cond.field })),
          ),
        );
      }
      return select;
    }

    operatorSelect(cond, field) {
      if (!field.operators.some((o) => o.key === cond.operator)) {
        cond.operator = field.operators[0].key;
        delete cond.value;
      }
      return el(
        "select",
        {
          class: "sb-operator",
          "aria-label": this.L.operator,
          onchange: (e) => {
            const before = field.operators.find((o) => o.key === cond.operator).input.type;
            cond.operator = e.target.value;
            const after = field.operators.find((o) => o.key === cond.operator).input.type;
            if (before !== after) delete cond.value;
            this.render();
          },
        },
        field.operators.map((o) => el("option", { value: o.key, text: o.label, selected: o.key === cond.operator })),
      );
    }

    paramInput(cond, param) {
      const set = (value) => {
        if (value === "" || value === undefined) delete cond[param.name];
        else cond[param.name] = value;
        this.changed();
      };
      if (param.type === "choice") {
        if (param.required && !cond[param.name]) cond[param.name] = param.choices[0][0];
        const options = param.required ? [] : [el("option", { value: "", text: this.L.any_channel })];
        for (const [value, label] of param.choices) {
          options.push(el("option", { value, text: label, selected: cond[param.name] === value }));
        }
        return el(
          "label",
          { class: "sb-param" },
          param.label + " ",
          el("select", { class: `sb-param-${param.name}`, onchange: (e) => set(e.target.value) }, options),
        );
      }
      const listId = `sb-list-${param.name}-${Math.random().toString(36).slice(2)}`;
      const suggestions = param.suggestions || (param.choices || []).map((c) => c[0]);
      return el(
        "label",
        { class: "sb-param" },
        param.label + " ",
        el("input", {
          type: "text",
          class: `sb-param-${param.name}`,
          value: cond[param.name] || "",
          list: suggestions.length ? listId : null,
          oninput: (e) => set(e.target.value.trim()),
        }),
        suggestions.length ? el("datalist", { id: listId }, suggestions.map((s) => el("option", { value: s }))) : null,
      );
    }

    valueInput(cond, input) {
      const set = (value) => {
        if (value === undefined) delete cond.value;
        else cond.value = value;
        this.changed();
      };
      const box = el("span", { class: "sb-value" });
      switch (input.type) {
        case "none":
          delete cond.value;
          return box;
        case "text":
          box.append(el("input", { type: "text", "aria-label": this.L.value, value: cond.value ?? "", oninput: (e) => set(e.target.value === "" ? undefined : e.target.value) }));
          return box;
        case "text_list": {
          const listId = `sb-sugg-${Math.random().toString(36).slice(2)}`;
          const current = Array.isArray(cond.value) ? cond.value.join(", ") : "";
          box.append(
            el("input", {
              type: "text",
              "aria-label": this.L.value,
              placeholder: this.L.values_hint,
              value: current,
              list: input.suggestions ? listId : null,
              oninput: (e) => {
                const items = splitList(e.target.value);
                set(items.length ? items : undefined);
              },
            }),
          );
          if (input.suggestions) box.append(el("datalist", { id: listId }, input.suggestions.map((s) => el("option", { value: s }))));
          return box;
        }
        case "number":
        case "integer":
          box.append(this.numberBox(cond.value, input.type, set));
          return box;
        case "number_pair":
        case "integer_pair": {
          const kind = input.type.replace("_pair", "");
          const pair = Array.isArray(cond.value) ? [...cond.value] : [undefined, undefined];
          const setAt = (i) => (v) => {
            pair[i] = v;
            set(pair[0] === undefined && pair[1] === undefined ? undefined : pair);
          };
          box.append(this.numberBox(pair[0], kind, setAt(0)), ` ${this.L.and} `, this.numberBox(pair[1], kind, setAt(1)));
          return box;
        }
        case "days":
          box.append(this.numberBox(cond.value, "integer", set, 1), ` ${this.L.days}`);
          return box;
        case "date":
          box.append(el("input", { type: "date", "aria-label": this.L.value, value: cond.value || "", oninput: (e) => set(e.target.value || undefined) }));
          return box;
        case "date_pair": {
          const pair = Array.isArray(cond.value) ? [...cond.value] : ["", ""];
          const setAt = (i) => (e) => {
            pair[i] = e.target.value;
            set(pair[0] || pair[1] ? pair : undefined);
          };
          box.append(
            el("input", { type: "date", value: pair[0] || "", oninput: setAt(0) }),
            ` ${this.L.and} `,
            el("input", { type: "date", value: pair[1] || "", oninput: setAt(1) }),
          );
          return box;
        }
        case "choices":
          box.append(this.choicesBox(cond, input.choices, set));
          return box;
        default:
          return box;
      }
    }

    numberBox(value, kind, set, min) {
      return el("input", {
        type: "number",
        class: "sb-number",
        "aria-label": this.L.value,
        step: kind === "integer" ? "1" : "any",
        min: min,
        value: value ?? "",
        oninput: (e) => set(toNumber(e.target.value)),
      });
    }

    choicesBox(cond, choices, set) {
      const chosen = new Set((Array.isArray(cond.value) ? cond.value : []).map(String));
      const read = (checked) => {
        const values = choices.filter(([v]) => checked.has(String(v))).map(([v]) => v);
        set(values.length ? values : undefined);
      };
      if (choices.length > 12) {
        const select = el(
          "select",
          {
            multiple: true,
            size: 6,
            "aria-label": this.L.value,
            onchange: (e) => read(new Set([...e.target.selectedOptions].map((o) => o.value))),
          },
          choices.map(([v, label]) => el("option", { value: String(v), text: label, selected: chosen.has(String(v)) })),
        );
        return select;
      }
      const box = el("span", { class: "sb-choices" });
      for (const [value, label] of choices) {
        box.append(
          el(
            "label",
            {},
            el("input", {
              type: "checkbox",
              value: String(value),
              checked: chosen.has(String(value)),
              onchange: () => {
                const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
                read(checked);
              },
            }),
            " " + label,
          ),
        );
      }
      return box;
    }

    windowInput(cond, param) {
      const w = cond.window || { kind: "all_time" };
      const box = el("span", { class: "sb-window" });
      const apply = () => {
        if (w.kind === "all_time") delete cond.window;
        else cond.window = { ...w };
        this.changed();
      };
      const kind = el(
        "select",
        {
          class: "sb-window-kind",
          "aria-label": param.label,
          onchange: (e) => {
            for (const key of Object.keys(w)) delete w[key];
            w.kind = e.target.value;
            if (w.kind === "last_days") w.days = 30;
            apply();
            box.replaceWith(this.windowInput(cond, param));
          },
        },
        el("option", { value: "all_time", text: this.L.any_time, selected: w.kind === "all_time" }),
        el("option", { value: "last_days", text: this.L.last_days, selected: w.kind === "last_days" }),
        el("option", { value: "between", text: this.L.between, selected: w.kind === "between" }),
      );
      box.append(el("span", { class: "sb-window-label", text: param.label + " " }), kind);
      if (w.kind === "last_days") {
        box.append(" ", this.numberBox(w.days, "integer", (v) => ((w.days = v), apply()), 1), ` ${this.L.days}`);
      } else if (w.kind === "between") {
        box.append(
          " ",
          el("input", { type: "date", value: w.from || "", oninput: (e) => ((w.from = e.target.value), apply()) }),
          ` ${this.L.and} `,
          el("input", { type: "date", value: w.to || "", oninput: (e) => ((w.to = e.target.value), apply()) }),
        );
      }
      return box;
    }

    propertiesInput(cond, param) {
      const filters = Array.isArray(cond.properties) ? cond.properties : [];
      const box = el("div", { class: "sb-properties" }, el("span", { class: "sb-window-label", text: param.label }));
      const apply = () => {
        if (filters.length) cond.properties = filters;
        else delete cond.properties;
        this.changed();
      };
      filters.forEach((f, i) => {
        const noValue = f.operator === "is_set" || f.operator === "is_not_set";
        const numeric = ["gt", "gte", "lt", "lte"].includes(f.operator);
        const value = noValue
          ? null
          : el("input", {
              type: numeric ? "number" : "text",
              step: "any",
              "aria-label": this.L.value,
              placeholder: f.operator === "in" ? this.L.values_hint : this.L.value,
              value: Array.isArray(f.value) ? f.value.join(", ") : f.value ?? "",
              oninput: (e) => {
                const text = e.target.value;
                f.value = f.operator === "in" ? splitList(text) : numeric ? toNumber(text) : text;
                apply();
              },
            });
        box.append(
          el(
            "div",
            { class: "sb-property", "data-property": String(i + 1) },
            el("input", { type: "text", "aria-label": this.L.property, placeholder: this.L.property, value: f.key || "", oninput: (e) => ((f.key = e.target.value.trim()), apply()) }),
            el(
              "select",
              {
                "aria-label": this.L.operator,
                onchange: (e) => {
                  f.operator = e.target.value;
                  if (f.operator === "is_set" || f.operator === "is_not_set") delete f.value;
                  apply();
                  box.replaceWith(this.propertiesInput(cond, param));
                },
              },
              param.operators.map((o) => el("option", { value: o.key, text: o.label, selected: o.key === f.operator })),
            ),
            value,
            el("button", {
              type: "button",
              class: "sb-remove",
              "aria-label": this.L.remove,
              text: "×",
              onclick: () => {
                filters.splice(i, 1);
                apply();
                box.replaceWith(this.propertiesInput(cond, param));
              },
            }),
          ),
        );
      });
      box.append(
        el("button", {
          type: "button",
          class: "button sb-add-property",
          text: "+ " + this.L.add_property,
          onclick: () => {
            filters.push({ key: "", operator: "eq", value: "" });
            apply();
            box.replaceWith(this.propertiesInput(cond, param));
          },
        }),
      );
      return box;
    }
  }

  function start() {
    document.querySelectorAll(".segment-builder").forEach((root) => {
      if (!root.dataset.ready) {
        root.dataset.ready = "1";
        new Builder(root);
      }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
