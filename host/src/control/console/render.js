// The redraw: every section's render function, in page order, run after
// each poll and when the operator picks a component or signs out.
// console.js names the sections (drawing); this module imports none of
// them, because their buttons start actions that poll and a poll redraws:
// importing them here would close an import cycle.

let sections = [];

/** Draw `renderers`, in this order, on every redraw. */
export function drawing(...renderers) {
  sections = renderers;
}

export function render() {
  for (const draw of sections) draw();
}
