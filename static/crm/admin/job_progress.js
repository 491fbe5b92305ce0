/*
 * Follows a job started from the admin (crm.admin.base.job_progress_message): polls the status URL in
 * data-job-progress every second and shows its message (translated by the server), a progress bar and,
 * once done, a link to the result. Tells the page with a "job-progress:finished" event, so that the
 * dashboard redraws its charts.
 */
(function () {
  "use strict";

  const POLL_MS = 1000;
  const GIVE_UP_MS = 15 * 60 * 1000;

  function track(node) {
    const text = node.querySelector(".job-progress-text");
    const bar = node.querySelector(".job-progress-bar");
    const started = Date.now();

    function finish(body) {
      node.dataset.state = body.state;
      if (bar) bar.remove();
      if (body.link) {
        const a = document.createElement("a");
        a.href = body.link;
        a.textContent = body.link_text;
        node.append(" ", a);
      }
      document.dispatchEvent(new CustomEvent("job-progress:finished", { detail: body }));
    }

    async function poll() {
      try {
        const response = await fetch(node.dataset.jobProgress, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        const body = await response.json();
        if (!response.ok) throw new Error(body.error || response.statusText);
        text.textContent = body.message;
        node.dataset.state = body.state;
        if (body.state === "done" || body.state === "failed") return finish(body);
        if (bar && body.total) {
          bar.max = body.total;
          bar.value = body.done;
        }
      } catch (e) {
        text.textContent = e.message;
      }
      if (Date.now() - started < GIVE_UP_MS) window.setTimeout(poll, POLL_MS);
    }

    poll();
  }

  function start() {
    document.querySelectorAll("[data-job-progress]").forEach(track);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
