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
