/*
 * The campaign report's charts (templates/admin/campaigns/campaign_report.html): the funnel per arm (% of
 * recipients), cumulative conversions per arm by day, and the uplift in conversion against the holdout
 * with its 95 % interval (a floating bar from the low to the high bound, the estimate as a point). Data
 * and every word come from the page (json_script "campaign-report-chart", campaigns/admin/reports.py).
 */
(function () {
  "use strict";

  const PALETTE = ["#417690", "#e9a23b", "#07c160", "#8064a2", "#c0504d", "#4bacc6"];
  const HOLDOUT = "#9e9e9e";

  function colour(key, i) {
    return key === "holdout" ? HOLDOUT : PALETTE[i % PALETTE.length];
  }

  function draw() {
    const node = document.getElementById("campaign-report-chart");
    if (!node || !window.Chart) return;
    const data = JSON.parse(node.textContent);
    const common = { responsive: true, maintainAspectRatio: false, animation: false };

    const funnel = document.getElementById("chart-funnel");
    if (funnel) {
      new window.Chart(funnel, {
        type: "bar",
        data: {
          labels: data.funnel.steps,
          datasets: data.funnel.arms.map((a, i) => ({
            label: a.label, data: a.values, backgroundColor: colour(a.key, i), borderWidth: 0,
          })),
        },
        options: { ...common, scales: { y: { beginAtZero: true, title: { display: true, text: data.labels.percentOfRecipients } } } },
      });
    }

    const conversions = document.getElementById("chart-conversions");
    if (conversions) {
      new window.Chart(conversions, {
        type: "line",
        data: {
          labels: data.days,
          datasets: data.conversions.map((a, i) => ({
            label: a.label, data: a.values, borderColor: colour(a.key, i), backgroundColor: colour(a.key, i),
            tension: 0, pointRadius: 2,
          })),
        },
        options: { ...common, scales: { y: { beginAtZero: true, title: { display: true, text: data.labels.cumulativeConversion } } } },
      });
    }

    const uplift = document.getElementById("chart-uplift");
    if (uplift && data.uplift.length) {
      new window.Chart(uplift, {
        type: "bar",
        data: {
          labels: data.uplift.map((u) => u.label),
          datasets: [
            { type: "bar", label: data.labels.interval, data: data.uplift.map((u) => [u.low, u.high]), backgroundColor: "rgba(65, 118, 144, 0.35)", borderColor: "#417690", borderWidth: 1 },
            { type: "scatter", label: data.labels.estimate, data: data.uplift.map((u, i) => ({ x: u.label, y: u.estimate })), backgroundColor: "#c0504d", pointRadius: 5 },
          ],
        },
        options: { ...common, indexAxis: "x", scales: { y: { title: { display: true, text: data.labels.uplift } } } },
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
