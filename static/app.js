// Drag and drop onto the upload area: the dropped file goes into the plain file input,
// so the form (htmx or not) sends it as usual.
document.addEventListener("DOMContentLoaded", () => {
  for (const zone of document.querySelectorAll(".drop")) {
    const input = zone.querySelector("input[type=file]");
    if (!input) continue;
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dragover");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragover"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragover");
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
      }
    });
  }
});

// "Print / save as PDF" on an explanation (also in fragments htmx swaps in later, hence one
// listener on the document); the print stylesheet in app.css lays the page out for A4.
document.addEventListener("click", (event) => {
  if (event.target instanceof Element && event.target.closest("[data-print]")) {
    window.print();
  }
});

// After an upload (or an example) the answer lands in #result, below the form: on a phone it
// would change out of sight. Bring the result, or the error, into view and give it the focus,
// so a screen reader reads it and the keyboard continues from there.
function focusResult(container) {
  // the error's box, or the result's heading (its own banners come right below it)
  const target = container.querySelector("[data-focus]") || container.firstElementChild;
  if (!target) return;
  if (!target.hasAttribute("tabindex")) target.setAttribute("tabindex", "-1");
  target.scrollIntoView({ block: "start" });
  target.focus({ preventScroll: true });
}

document.addEventListener("htmx:afterSwap", (event) => {
  const target = event.detail && event.detail.target;
  if (target && target.id === "result") focusResult(target);
});

// Without htmx the form posts the whole page: a failed upload comes back with its error in
// #result (a success is a redirect to the explanation's own page).
document.addEventListener("DOMContentLoaded", () => {
  const result = document.getElementById("result");
  if (result && result.querySelector("[data-focus]")) focusResult(result);
});
