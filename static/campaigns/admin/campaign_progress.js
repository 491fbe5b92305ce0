/*
 * The campaign page's live progress bar: polls the latest run's progress (CampaignAdmin.progress_view,
 * JSON with labels already translated by the server) every data-poll-ms and redraws the bar, the counts
 * by status and by reason, until the run is over (sent, partly delivered or cancelled).
 */
(function () {
  "use strict";

  function render(node, body) {
    const bar = node.querySelector(".campaign-progress-bar");
    if (bar && body.total !== undefined) {
      bar.max = body.total || 1;
      bar.value = body.done || 0;
    }
    const status = node.querySelector('[data-field="status_label"]');
    if (status) status.textContent = body.status_label || body.message || "";
    const summary = node.querySelector('[data-field="summary"]');
    if (summary && body.total !== undefined) {
      summary.textContent = " " + body.done + " / " + body.total + (body.over ? " · " + node.dataset.doneText : "");
    }
    const tbody = node.querySelector(".campaign-progress-groups tbody");
    if (tbody && body.groups) {
      tbody.replaceChildren(
        ...body.groups.map(function (g) {
          const tr = document.createElement("tr");
          tr.dataset.group = g.key;
          const th = document.createElement("th");
          th.textContent = g.label;
          const td = document.createElement("td");
          td.dataset.count = "";
          td.textContent = g.count;
          tr.append(th, td);
          return tr;
        })
      );
    }
    const reasons = node.querySelector(".campaign-progress-reasons");
    if (reasons && body.reasons) {
      reasons.replaceChildren(
        ...body.reasons.map(function (r) {
          const li = document.createElement("li");
          li.textContent = r.text + ": " + r.count;
          return li;
        })
      );
    }
    node.dataset.status = body.status || "";
    node.dataset.over = body.over ? "true" : "false";
  }

  function track(node) {
    const every = parseInt(node.dataset.pollMs || "2000", 10);
    async function poll() {
      let over = false;
      try {
        const response = await fetch(node.dataset.progressUrl, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        const body = await response.json();
        if (response.ok) {
          render(node, body);
          over = Boolean(body.over);
        }
      } catch (e) {
        // A failed poll (the server restarting) is tried again at the next tick.
      }
      if (!over) window.setTimeout(poll, every);
    }
    poll();
  }

  function start() {
    const node = document.getElementById("campaign-progress");
    if (node) track(node);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
