// Putting data into the page: elements built from text and attributes,
// never from parsed markup (component names and dead letters' payloads are
// other people's input); live regions changed only when their text
// changes; tables redrawn without throwing the keyboard focus away.

export const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
export function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Set a live region's text only when it changes, so that screen readers
 * hear a change once, not every poll. */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export function say(message) {
  setText($('status'), message);
}

/** Replace `parent`'s children with `children`, keeping keyboard focus: a
 * focused control inside a keyed row (or card) is focused again in the new
 * row with the same key, so a poll never throws the focus away. */
export function replaceKeeping(parent, children) {
  const focused = document.activeElement;
  const keyed = focused && parent.contains(focused) ? focused.closest('[data-key]') : null;
  const key = keyed && keyed.getAttribute('data-key');
  const role = focused && focused.getAttribute('data-role');
  parent.replaceChildren(...children);
  if (key === null || key === undefined) return;
  for (const node of parent.querySelectorAll('[data-key]')) {
    if (node.getAttribute('data-key') !== key) continue;
    const again = role ? node.querySelector(`[data-role="${role}"]`) : null;
    if (again) again.focus();
  }
}

/** Each body cell of `table` labelled with its column's header, which the
 * narrow layout shows beside the value (rows become stacked blocks). */
export function labelCells(table) {
  const headers = [...table.tHead.rows[0].cells].map((cell) => cell.textContent);
  for (const row of table.tBodies[0].rows) {
    [...row.cells].forEach((cell, i) => {
      if (headers[i] && !cell.hasAttribute('colspan')) cell.setAttribute('data-label', headers[i]);
    });
  }
}
