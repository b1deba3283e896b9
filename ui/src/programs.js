// The programs table: sortable (click a heading), searchable, one row per program in view.
import { el, num, secs, traceLink } from "./format.js";

const COLUMNS = [
  { key: "id", label: "program", text: true },
  { key: "status", label: "status", text: true },
  { key: "latency_s", label: "latency s", fmt: (v) => secs(v) },
  { key: "attained", label: "attained service", fmt: num },
  { key: "critical_service", label: "critical path", fmt: num },
  { key: "level", label: "level", fmt: num },
  { key: "class", label: "class", text: true },
  { key: "tenant", label: "tenant", text: true },
  { key: "engine", label: "engine", text: true },
  { key: "calls", label: "calls", get: (p) => p.calls_total, fmt: (_, p) => `${p.calls_finished}/${p.calls_total}` },
  { key: "preemptions", label: "preempted", fmt: num },
  { key: "waiting_s", label: "wait s", fmt: (v) => secs(v) },
  { key: "run_s", label: "run s", fmt: (v) => secs(v) },
  { key: "links", label: "trace", sortable: false },
];

const state = { sort: "latency_s", desc: true, query: "", selected: null, onSelect: null, last: null };

function value(p, col) {
  return col.get ? col.get(p) : p[col.key];
}

function compare(a, b, col) {
  const x = value(a, col);
  const y = value(b, col);
  if (x === y) return 0;
  if (x === null || x === undefined) return 1;
  if (y === null || y === undefined) return -1;
  return col.text ? String(x).localeCompare(String(y)) : x - y;
}

function matches(p, q) {
  if (!q) return true;
  const hay = [p.id, p.status, p.engine, p.tenant, p.class, JSON.stringify(p.meta || {})]
    .filter(Boolean).join(" ").toLowerCase();
  return q.toLowerCase().split(/\s+/).every((w) => hay.includes(w));
}

function head(table) {
  const row = el("tr");
  for (const col of COLUMNS) {
    const mark = state.sort === col.key ? (state.desc ? " ▼" : " ▲") : "";
    const th = el("th", { "data-key": col.key, class: col.sortable === false ? "" : "sortable" }, col.label + mark);
    if (col.sortable !== false) {
      th.addEventListener("click", () => {
        state.desc = state.sort === col.key ? !state.desc : !col.text;
        state.sort = col.key;
        if (state.last) renderPrograms(state.last);
      });
    }
    row.append(th);
  }
  table.tHead.replaceChildren(row);
}

export function initPrograms(onSelect) {
  state.onSelect = onSelect;
  const search = document.getElementById("program-search");
  search.addEventListener("input", () => {
    state.query = search.value.trim();
    if (state.last) renderPrograms(state.last);
  });
}

export function selectProgram(id) {
  state.selected = id;
  for (const tr of document.querySelectorAll("#programs tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.programId === id);
  }
}

export function renderPrograms(snap) {
  state.last = snap;
  const table = document.getElementById("programs");
  head(table);
  const col = COLUMNS.find((c) => c.key === state.sort) || COLUMNS[0];
  const rows = snap.programs.filter((p) => matches(p, state.query));
  rows.sort((a, b) => (state.desc ? -1 : 1) * compare(a, b, col));
  const body = rows.map((p) => {
    const tr = el("tr", { "data-program-id": p.id, class: p.id === state.selected ? "selected" : "" });
    for (const c of COLUMNS) {
      const v = value(p, c);
      let cell;
      if (c.key === "links") cell = traceLink(p.links);
      else if (c.fmt) cell = c.fmt(v, p);
      else cell = v === null || v === undefined ? "" : String(v);
      tr.append(el("td", { "data-key": c.key }, cell));
    }
    tr.addEventListener("click", () => state.onSelect && state.onSelect(p.id));
    return tr;
  });
  table.tBodies[0].replaceChildren(...body);
  document.getElementById("program-count").textContent =
    `${rows.length} of ${snap.programs.length} programs`;
  const noMeta = snap.programs.every((p) => p.tenant == null && p.class == null);
  document.getElementById("program-note").textContent = noMeta
    ? "Tenant and class are not fields of a program: they show a program's `tenant` / `class` metadata, which no program here has. Level: the lowest level of its unfinished calls (else its last call's)."
    : "Tenant and class come from each program's metadata. Level: the lowest level of its unfinished calls (else its last call's).";
}
