// Small formatting helpers shared by the dashboard's views.

/** A stable colour per program id (the same program has the same colour in every view). */
export function programColour(id) {
  let h = 2166136261;
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  const hue = (h >>> 0) % 360;
  return `hsl(${hue}, 62%, 52%)`;
}

export function secs(x, digits = 2) {
  return x === null || x === undefined ? "" : Number(x).toFixed(digits);
}

export function num(x) {
  if (x === null || x === undefined) return "";
  return Number.isInteger(x) ? String(x) : Number(x).toFixed(1);
}

/** Shorten a call id (`c-<ms hex><random>`) to what tells calls apart on screen. */
export function shortCall(id) {
  return id.length > 10 ? `…${id.slice(-6)}` : id;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c);
  }
  return node;
}

/** A link to Jaeger when the snapshot carries one (AUTELLIX_JAEGER_UI_URL is set). */
export function traceLink(links, label = "trace") {
  if (!links) return "";
  const a = el("a", { href: links.trace, target: "_blank", rel: "noopener", class: "trace" }, label);
  const s = el("a", { href: links.search, target: "_blank", rel: "noopener", class: "trace" }, "search");
  return el("span", {}, a, " · ", s);
}
