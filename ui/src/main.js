// The Autellix dashboard: one server-sent event stream of snapshots (the frontend's single
// reader fans each one out to every browser), rendered by the views below.
import "vis-timeline/styles/vis-timeline-graph2d.min.css";
import "./style.css";
import { renderCallGraph } from "./callgraph.js";
import { renderEngines } from "./engines.js";
import { initPrograms, renderPrograms, selectProgram } from "./programs.js";

const params = new URLSearchParams(location.search);
let selected = params.get("program");
let last = null;

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
  source.addEventListener("snapshot", (ev) => {
    const snap = JSON.parse(ev.data);
    if (snap.error) {
      status(snap.error, "error");
      return;
    }
    status("live", "live");
    try {
      render(snap);
    } catch (err) {
      status(`render failed: ${err}`, "error");
      console.error(err);
    }
  });
}

initPrograms(select);
session().catch((err) => console.error("session", err));
connect();
