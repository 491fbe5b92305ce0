/*
 * The win-back programme form's preview (templates/admin/journeys/winbackprogramme/change_form.html):
 * posts the form as it stands, unsaved, to the preview view and shows the counts it answers, or the
 * fields at fault. Every word comes from the server.
 */
(function () {
  "use strict";

  function setup() {
    const box = document.getElementById("winback-preview");
    if (!box) return;
    const button = box.querySelector("button");
    const result = box.querySelector("[data-testid=winback-preview-result]");
    button.addEventListener("click", async function () {
      const form = box.closest("form");
      const data = new FormData(form);
      data.set("programme_id", box.dataset.programme || "");
      result.textContent = "…";
      const response = await fetch(box.dataset.url, { method: "POST", body: data, credentials: "same-origin" });
      const answer = await response.json();
      result.replaceChildren();
      if (!answer.ok) {
        for (const [field, errors] of Object.entries(answer.errors)) {
          const line = document.createElement("p");
          line.className = "errornote";
          line.textContent = field + ": " + errors.join(" ");
          result.appendChild(line);
        }
        return;
      }
      const summary = document.createElement("p");
      summary.dataset.testid = "winback-preview-eligible";
      summary.dataset.eligible = answer.eligible;
      summary.textContent = answer.text;
      result.appendChild(summary);
      if (answer.suppressed.length) {
        const list = document.createElement("ul");
        for (const s of answer.suppressed) {
          const item = document.createElement("li");
          item.textContent = s.reason + ": " + s.count;
          list.appendChild(item);
        }
        result.appendChild(list);
      }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup);
  else setup();
})();
