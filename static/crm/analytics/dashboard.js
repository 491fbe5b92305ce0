/*
 * The analytics dashboard: draws each chart from its JSON endpoint (crm/analytics/views.py) with
 * Chart.js and the chartjs-chart-matrix plugin (heat map), both installed from npm and served as static
 * files. Every word shown comes from the page (json_script "analytics-labels") or the endpoints.
 */
(function () {
  "use strict";

  const PALETTE = ["#417690", "#79aec8", "#e9a23b", "#c0504d", "#8064a2", "#4bacc6", "#9bbb59", "#7f7f7f"];
  const charts = {};
  let L = {};
  let CLOCK = { time_zone: "Asia/Shanghai", locale: "en-GB" };

  function fmt(template, params) {
    return template.replace(/%\((\w+)\)s/g, (_, key) => String(params[key]));
  }

  function pct(x) {
    return x === null || x === undefined ? "–" : (x * 100).toFixed(1) + "%";
  }

  function note(name, text) {
    const node = document.querySelector(`[data-note="${name}"]`);
    if (node) node.textContent = text;
  }

  // On the business's clock (settings.TIME_ZONE) in the page's language, whatever the browser's zone.
  function formatInstant(iso) {
    return new Intl.DateTimeFormat(CLOCK.locale, {
      timeZone: CLOCK.time_zone,
      dateStyle: "medium",
      timeStyle: "short",
      hourCycle: "h23",
    }).format(new Date(iso));
  }

  // A calendar day (YYYY-MM-DD) in the page's language: the day as written, in no time zone.
  function formatDay(day) {
    return new Intl.DateTimeFormat(CLOCK.locale, { timeZone: "UTC", dateStyle: "medium" }).format(new Date(day + "T00:00:00Z"));
  }

  function computedNote(name, body, extra) {
    const when = body.computed_at ? formatInstant(body.computed_at) : "";
    note(name, [extra, when ? fmt(L.computed_at, { when }) : ""].filter(Boolean).join(" · "));
  }

  async function load(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  function draw(id, config) {
    if (charts[id]) charts[id].destroy();
    charts[id] = new window.Chart(document.getElementById(id), config);
    return charts[id];
  }

  async function chart(id, noteName, url, build) {
    const canvas = document.getElementById(id);
    if (!canvas || !url) return;
    try {
      const body = await load(url);
      build(body);
    } catch (e) {
      note(noteName, fmt(L.failed, { error: e.message }));
    }
  }

  // --- the charts ---------------------------------------------------------------------------------

  function lifecycle(body) {
    // Stages are known from the first computation on (tracked_since); the months before it would only
    // repeat today's stages, so they are left blank and the note says so.
    const since = body.tracked_since ? body.tracked_since.slice(0, 7) : null;
    const known = (i) => since !== null && body.months[i] >= since;
    draw("chart-lifecycle", {
      type: "line",
      data: {
        labels: body.months,
        datasets: body.stages.map((s, i) => ({
          label: s.label,
          data: body.series[s.key].map((n, m) => (known(m) ? n : null)),
          fill: true,
          borderColor: PALETTE[i % PALETTE.length],
          backgroundColor: PALETTE[i % PALETTE.length] + "99",
          tension: 0.2,
        })),
      },
      options: { scales: { y: { stacked: true, title: { display: true, text: L.customers } } }, interaction: { mode: "index", intersect: false } },
    });
    const extra = !since ? L.no_data : since > body.months[0] ? fmt(L.tracked_since, { date: formatDay(body.tracked_since) }) : "";
    computedNote("lifecycle", body, extra);
  }

  function cohorts(body) {
    const rows = body.cohorts.filter((c) => c.size > 0);
    if (!rows.length) return note("cohorts", L.no_data);
    const maxAge = Math.max(...rows.map((c) => c.retention.length));
    const xLabels = Array.from({ length: maxAge }, (_, k) => fmt(L.month_n, { n: k }));
    const yLabels = rows.map((c) => `${c.month} (${c.size.toLocaleString()})`);
    const cells = [];
    rows.forEach((c, yi) => c.retention.forEach((v, k) => cells.push({ x: xLabels[k], y: yLabels[yi], v: v, n: c.active[k] })));
    const canvas = document.getElementById("chart-cohorts");
    canvas.style.height = Math.max(240, rows.length * 28 + 80) + "px";
    draw("chart-cohorts", {
      type: "matrix",
      data: {
        datasets: [
          {
            data: cells,
            // Month 0 is always 100%; shade the later months on their own scale so they stay readable.
            backgroundColor(ctx) {
              const v = ctx.raw ? ctx.raw.v : null;
              if (v === null || v === undefined) return "transparent";
              const later = Math.min(1, v / 0.5);
              return ctx.raw.x === xLabels[0] ? "rgba(65,118,144,0.9)" : `rgba(65,118,144,${0.08 + 0.85 * later})`;
            },
            borderWidth: 1,
            borderColor: "rgba(0,0,0,0.08)",
            width: ({ chart }) => (chart.chartArea || {}).width / xLabels.length - 1,
            height: ({ chart }) => (chart.chartArea || {}).height / yLabels.length - 1,
          },
        ],
      },
      options: {
        maintainAspectRatio: false,
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { title: () => "", label: (ctx) => `${ctx.raw.y} · ${ctx.raw.x}: ${pct(ctx.raw.v)} (${ctx.raw.n})` } },
        },
        scales: {
          x: { type: "category", labels: xLabels, position: "top", grid: { display: false } },
          y: { type: "category", labels: yLabels, offset: true, grid: { display: false }, title: { display: true, text: L.cohort } },
        },
      },
    });
    computedNote("cohorts", body);
  }

  function orders(body) {
    draw("chart-repeat", {
      type: "line",
      data: {
        labels: body.months,
        datasets: [{ label: L.repeat_rate, data: body.repeat_purchase_rate.map((x) => (x === null ? null : x * 100)), borderColor: PALETTE[0], tension: 0.2 }],
      },
      options: { scales: { y: { beginAtZero: true, ticks: { callback: (v) => v + "%" } } } },
    });
    computedNote("repeat", body, fmt(L.overall_repeat, { rate: pct(body.overall_repeat_purchase_rate) }));
    draw("chart-aov", {
      data: {
        labels: body.months,
        datasets: [
          { type: "bar", label: L.aov, data: body.average_order_value, backgroundColor: PALETTE[1], yAxisID: "y" },
          { type: "line", label: L.orders, data: body.orders, borderColor: PALETTE[2], yAxisID: "y1", tension: 0.2 },
        ],
      },
      options: { scales: { y: { beginAtZero: true }, y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } } } },
    });
    computedNote("aov", body);
  }

  function ltv(body) {
    const labels = body.channels.map((c) => c.label);
    draw("chart-ltv", {
      type: "bar",
      data: {
        labels,
        datasets: [
          { label: L.ltv, data: body.channels.map((c) => c.ltv), backgroundColor: PALETTE[0] },
          { label: L.predicted_ltv, data: body.channels.map((c) => c.predicted_ltv), backgroundColor: PALETTE[1] },
        ],
      },
    });
    computedNote("ltv", body);
    draw("chart-ltv-cac", {
      type: "bar",
      data: {
        labels,
        datasets: [
          { label: L.ltv_cac, data: body.channels.map((c) => c.ltv_cac), backgroundColor: PALETTE[0] },
          { label: L.predicted_ltv_cac, data: body.channels.map((c) => c.predicted_ltv_cac), backgroundColor: PALETTE[2] },
        ],
      },
      options: {
        plugins: {
          tooltip: {
            callbacks: {
              afterLabel: (ctx) => {
                const c = body.channels[ctx.dataIndex];
                return c.cac === null ? "" : `${L.cac}: ${c.cac}`;
              },
            },
          },
        },
      },
    });
    const costed = body.channels.some((c) => c.ltv_cac !== null);
    computedNote("ltv-cac", body, costed ? "" : L.no_cac);
  }

  function funnel(body) {
    draw("chart-funnel", {
      type: "bar",
      data: {
        labels: body.steps.map((s) => s.label),
        datasets: [{ label: L.customers, data: body.steps.map((s) => s.customers), backgroundColor: PALETTE.slice(0, body.steps.length) }],
      },
      options: {
        indexAxis: "y",
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { afterLabel: (ctx) => (ctx.dataIndex ? fmt(L.of_previous, { rate: pct(body.steps[ctx.dataIndex].from_previous) }) : "") } },
        },
      },
    });
    computedNote("funnel", body, body.steps.map((s) => `${s.label}: ${s.customers.toLocaleString()}${s.from_previous !== null ? " (" + pct(s.from_previous) + ")" : ""}`).join(" → "));
  }

  function attribution(body) {
    const by = document.getElementById("attribution-group").value;
    const groups = new Map();
    for (const row of body.rows) {
      const none = row.source === "(none)";
      const key = none ? L.no_touch : by === "campaign" ? row.campaign || "–" : row.source;
      const g = groups.get(key) || { first_touch: 0, last_touch: 0, linear: 0 };
      g.first_touch += row.first_touch;
      g.last_touch += row.last_touch;
      g.linear += row.linear;
      groups.set(key, g);
    }
    const top = [...groups.entries()].sort((a, b) => b[1].linear - a[1].linear).slice(0, 12);
    draw("chart-attribution", {
      type: "bar",
      data: {
        labels: top.map(([k]) => k),
        datasets: ["first_touch", "last_touch", "linear"].map((model, i) => ({
          label: L[model],
          data: top.map(([, g]) => Math.round(g[model] * 100) / 100),
          backgroundColor: PALETTE[i],
        })),
      },
      options: { indexAxis: "y", scales: { x: { title: { display: true, text: `${L.revenue} (${body.currency})` } } } },
    });
    computedNote("attribution", body, top.length ? "" : L.no_data);
  }

  // --- wiring -------------------------------------------------------------------------------------

  function withParams(url, params) {
    const u = new URL(url, window.location.origin);
    for (const [k, v] of Object.entries(params)) if (v) u.searchParams.set(k, v);
    return u.toString();
  }

  function start() {
    const root = document.getElementById("analytics-dashboard");
    if (!root || !window.Chart) return;
    L = JSON.parse(document.getElementById("analytics-labels").textContent);
    const clock = document.getElementById("analytics-clock");
    if (clock) CLOCK = JSON.parse(clock.textContent);
    const ep = (id) => document.getElementById(id)?.dataset.endpoint;
    const loadSummaries = () => {
      chart("chart-lifecycle", "lifecycle", ep("chart-lifecycle"), lifecycle);
      chart("chart-cohorts", "cohorts", ep("chart-cohorts"), cohorts);
      chart("chart-repeat", "repeat", ep("chart-repeat"), orders);
      chart("chart-ltv", "ltv", ep("chart-ltv"), ltv);
    };
    loadSummaries();
    const loadFunnel = () =>
      chart("chart-funnel", "funnel", ep("chart-funnel") && withParams(ep("chart-funnel"), { days: document.getElementById("funnel-days").value }), funnel);
    const loadAttribution = () =>
      chart(
        "chart-attribution",
        "attribution",
        ep("chart-attribution") &&
          withParams(ep("chart-attribution"), {
            from: document.getElementById("attribution-from").value,
            to: document.getElementById("attribution-to").value,
            lookback: document.getElementById("attribution-lookback").value,
          }),
        attribution,
      );
    loadFunnel();
    loadAttribution();
    // "Recompute now" finished (static/crm/admin/job_progress.js): draw the new figures.
    document.addEventListener("job-progress:finished", (event) => {
      if (event.detail.state !== "done") return;
      loadSummaries();
      loadFunnel();
      loadAttribution();
    });
    document.getElementById("funnel-days").addEventListener("change", loadFunnel);
    ["attribution-from", "attribution-to", "attribution-lookback", "attribution-group"].forEach((id) =>
      document.getElementById(id).addEventListener("change", loadAttribution),
    );
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
