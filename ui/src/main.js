// The Autellix dashboard: one server-sent event stream of snapshots (the frontend's single
// reader fans each one out to every browser), rendered by the views below. The first event is
// a whole `snapshot`; then `delta`s: the head, the ids of the calls in view in order, and only
// the calls that changed since the snapshot this page has (`ui_encode.apply_delta` on the server
// is the same rule).
import "vis-timeline/styles/vis-timeline-graph2d.min.css";
import "./style.css";
import { renderCallGraph } from "./callgraph.js";
import { renderEngines } from "./engines.js";
import { initPrograms, renderPrograms, selectProgram } from "./programs.js";

const params = new URLSearchParams(location.search);
let selected = params.get("program");
let last = null;
let calls = new Map(); // call id -> call, as of the snapshot this page has
let haveSeq = null; // that snapshot's feed.seq

function pickDefault(snap) {
  // the program with the most calls in view: its graph says the most
  const counts = new Map();
  for (const c of snap.calls) counts.set(c.program_id, (counts.get(c.program_id) || 0) + 1);
  let best = null;
  for (const [id, n] of counts) if (best === null || n > counts.get(best)) best = id;
  return best;
}

function select(id) {
  selected = id;
  const url = new URL(location.href);
  url.searchParams.set("program", id);
  history.replaceState(null, "", url);
  selectProgram(id);
  if (last) renderCallGraph(last, id);
}

function render(snap) {
  last = snap;
  const onPath = new Set(Object.values(snap.critical_paths).flat());
  for (const c of snap.calls) c.critical = onPath.has(c.id);
  if (!selected) selected = pickDefault(snap);
  const clock = new Date(snap.now);
  document.getElementById("clock").textContent = `database time ${clock.toLocaleTimeString()}`;
  document.getElementById("scope").textContent =
    `calls of the last ${Math.round(snap.window_s)} s and all unfinished ones` +
    (snap.limits.calls_truncated ? ` (newest ${snap.limits.max_calls} only)` : "") +
    (snap.jaeger_ui ? "" : " · no Jaeger configured (AUTELLIX_JAEGER_UI_URL)");
  renderEngines(snap);
  renderPrograms(snap);
  selectProgram(selected);
  renderCallGraph(snap, selected);
  document.body.dataset.seq = String(snap.feed ? snap.feed.seq : 0);
}

function status(text, kind) {
  const node = document.getElementById("conn");
  node.textContent = text;
  node.className = `conn conn-${kind}`;
}

// With API keys on, the page is only served to a logged-in browser; its session may still end
// (expiry, logout in another tab, the key removed): then the stream is refused and the
// browser goes back to the login form instead of retrying forever.
async function session() {
  const resp = await fetch("api/session", { cache: "no-store" });
  if (resp.status === 401) {
    location.replace("login");
    return null;
  }
  if (!resp.ok) return null;
  const who = await resp.json();
  if (who.auth) {
    const node = document.getElementById("who");
    // what the snapshots hold: every tenant's programs (an admin tenant) or only its own
    node.textContent = `tenant ${who.tenant} · ${who.scope === null ? "all tenants" : "own programs"}`;
    node.hidden = false;
    document.getElementById("logout").hidden = who.via !== "cookie";
  }
  return who;
}

function connect() {
  const source = new EventSource("api/events");
  source.addEventListener("open", () => status("live", "live"));
  source.addEventListener("error", () => {
    status("reconnecting…", "wait");
    session().catch(() => {}); // a 401 here means the session ended: back to the login form
  });
  source.addEventListener("snapshot", (ev) => take(JSON.parse(ev.data), false, source));
  source.addEventListener("delta", (ev) => take(JSON.parse(ev.data), true, source));
}

// A whole snapshot replaces what the page has; a delta is applied to it (the ids in order, each
// call the delta's copy if it brings one, else the one held). A delta from another snapshot
// than this page's cannot be applied: reconnecting makes the server start with a whole one.
function take(msg, isDelta, source) {
  if (msg.error) {
    status(msg.error, "error");
    return;
  }
  let snap = msg;
  if (isDelta) {
    if (msg.base !== haveSeq) {
      source.close();
      haveSeq = null;
      connect();
      return;
    }
    for (const c of msg.upsert) calls.set(c.id, c);
    const list = msg.ids.map((id) => calls.get(id));
    const { base, ids, upsert, ...head } = msg;
    snap = { ...head, calls: list };
    document.body.dataset.deltas = String(Number(document.body.dataset.deltas || 0) + 1);
  }
  calls = new Map(snap.calls.map((c) => [c.id, c]));
  haveSeq = snap.feed ? snap.feed.seq : null;
  status("live", "live");
  try {
    render(snap);
  } catch (err) {
    status(`render failed: ${err}`, "error");
    console.error(err);
  }
}

initPrograms(select);
session().catch((err) => console.error("session", err));
connect();
