/*
 * The win-back report's charts (templates/admin/journeys/winback_report.html): treated and holdout
 * reactivation rates per run, and the uplift by value tier and channel with its 95 % interval (a floating
 * bar from the low to the high bound, the estimate as a point). Data and words come from the page.
 */
(function () {
  "use strict";

  function draw() {
    const node = document.getElementById("winback-report-chart");
    if (!node || !window.Chart) return;
    const data = JSON.parse(node.textContent);
    const common = { responsive: true, maintainAspectRatio: false, animation: false };
    const runs = document.getElementById("chart-winback-runs");
    if (runs) {
      new window.Chart(runs, {
        type: "line",
        data: {
          labels: data.runs,
          datasets: [
            { label: data.labels.treated, data: data.treated, borderColor: "#417690", backgroundColor: "#417690", tension: 0 },
            { label: data.labels.holdout, data: data.holdout, borderColor: "#9e9e9e", backgroundColor: "#9e9e9e", tension: 0 },
          ],
        },
        options: { ...common, scales: { y: { beginAtZero: true, title: { display: true, text: data.labels.rate } } } },
      });
    }
    const uplift = document.getElementById("chart-winback-uplift");
    if (uplift && data.uplift.length) {
      new window.Chart(uplift, {
        type: "bar",
        data: {
          labels: data.uplift.map((u) => u.label),
          datasets: [
            { type: "bar", label: data.labels.interval, data: data.uplift.map((u) => [u.low, u.high]), backgroundColor: "rgba(65, 118, 144, 0.35)", borderColor: "#417690", borderWidth: 1 },
            { type: "scatter", label: data.labels.estimate, data: data.uplift.map((u) => ({ x: u.label, y: u.estimate })), backgroundColor: "#c0504d", pointRadius: 5 },
          ],
        },
        options: { ...common, scales: { y: { title: { display: true, text: data.labels.uplift } } } },
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
