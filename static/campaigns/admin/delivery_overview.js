/*
 * The delivery overview's chart: messages sent a minute over the last hour, stacked by channel, drawn with
 * Chart.js (from npm, served under static/vendor/). The data and every word come from the page
 * (json_script "delivery-chart", campaigns/admin/delivery.py).
 */
(function () {
  "use strict";

  const PALETTE = { wechat: "#07c160", sms: "#417690", email: "#e9a23b", push: "#8064a2" };

  function draw() {
    const node = document.getElementById("delivery-chart");
    const canvas = document.getElementById("chart-send-rate");
    if (!node || !canvas || !window.Chart) return;
    const data = JSON.parse(node.textContent);
    const narrow = window.matchMedia("(max-width: 640px)").matches;
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: data.minutes,
        datasets: data.channels.map((c) => ({
          label: c.label,
          data: c.counts,
          backgroundColor: PALETTE[c.code] || "#7f7f7f",
          borderWidth: 0,
          stack: "sent",
        })),
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: narrow ? "bottom" : "top", labels: { boxWidth: 12 } } },
        scales: {
          x: { stacked: true, ticks: { maxTicksLimit: narrow ? 4 : 12, maxRotation: 0 }, grid: { display: false } },
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: !narrow, text: data.labels.perMinute } },
        },
      },
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
