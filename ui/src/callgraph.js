// One program's call graph: calls laid out by thread (rows) and arrival (columns), edges from
// parents and from the previous call of the thread, the critical path in red; beside it each
// call's wait vs run time; below, the calls as a table.
import { chartIn } from "./charts.js";
import { el, programColour, secs, shortCall, traceLink } from "./format.js";

const CRITICAL = "#d62728";
let graph = null;
let bars = null;

function charts() {
  if (!graph) graph = chartIn(document.getElementById("callgraph"));
  if (!bars) bars = chartIn(document.getElementById("waitrun"));
}

function graphOption(calls, path, colour) {
  const threads = [...new Set(calls.map((c) => c.thread_id))];
  const onPath = new Set(path);
  const edgeOnPath = new Set(path.slice(1).map((id, i) => `${path[i]}>${id}`));
  const nodes = calls.map((c, i) => ({
    id: c.id,
    name: shortCall(c.id),
    x: i * 90,
    y: threads.indexOf(c.thread_id) * 70,
    symbolSize: 26,
    itemStyle: {
      color: colour,
      borderColor: onPath.has(c.id) ? CRITICAL : "#fff",
      borderWidth: onPath.has(c.id) ? 4 : 1,
      opacity: c.status === "finished" ? 1 : 0.6,
    },
    label: { show: true, position: "bottom", fontSize: 10 },
    tooltip: {
      formatter: `${c.id}<br>thread ${c.thread_id} · ${c.status}<br>wait ${secs(c.wait_s)} s · run ${secs(c.run_s)} s` +
        (onPath.has(c.id) ? "<br><b>on the critical path</b>" : ""),
    },
  }));
  const links = [];
  const shown = new Set(calls.map((c) => c.id));
  for (const c of calls) {
    for (const d of c.deps.filter((dep) => shown.has(dep.id))) { // older ones left the window
      const critical = edgeOnPath.has(`${d.id}>${c.id}`);
      links.push({
        source: d.id,
        target: c.id,
        lineStyle: {
          color: critical ? CRITICAL : "#999",
          width: critical ? 3 : 1.2,
          type: d.kind === "thread" ? "dashed" : "solid",
          curveness: d.kind === "thread" ? 0 : 0.2,
        },
      });
    }
  }
  return {
    animation: false,
    tooltip: {},
    title: {
      text: "threads ↓, arrival →; red: critical path; dashed: same thread",
      textStyle: { fontSize: 11, fontWeight: "normal" },
    },
    series: [{
      type: "graph",
      layout: "none",
      roam: true,
      edgeSymbol: ["none", "arrow"],
      edgeSymbolSize: 7,
      data: nodes,
      links,
      top: 40,
      bottom: 30,
      left: 40,
      right: 40,
    }],
  };
}

function barsOption(calls, path, colour) {
  const onPath = new Set(path);
  const names = calls.map((c) => shortCall(c.id));
  return {
    animation: false,
    title: { text: "wait vs run (s)", textStyle: { fontSize: 11, fontWeight: "normal" } },
    tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
    legend: { right: 0, textStyle: { fontSize: 10 } },
    grid: { left: 70, right: 12, top: 30, bottom: 20 },
    xAxis: { type: "value" },
    yAxis: {
      type: "category",
      inverse: true,
      data: names,
      axisLabel: {
        fontSize: 10,
        color: (_, i) => (onPath.has(calls[i].id) ? CRITICAL : "#333"),
      },
    },
    series: [
      { name: "wait", type: "bar", stack: "t", itemStyle: { color: "#bbb" }, data: calls.map((c) => c.wait_s) },
      { name: "run", type: "bar", stack: "t", itemStyle: { color: colour }, data: calls.map((c) => c.run_s) },
    ],
  };
}

function table(calls, path) {
  const onPath = new Set(path);
  const t = document.getElementById("program-calls");
  const headings = ["call", "thread", "after", "status", "engine", "level", "preempted", "wait s", "run s", "cached / prompt", "critical", "trace"];
  t.tHead.replaceChildren(el("tr", {}, ...headings.map((h) => el("th", {}, h))));
  t.tBodies[0].replaceChildren(...calls.map((c) => el(
    "tr",
    { "data-call-id": c.id, class: onPath.has(c.id) ? "critical" : "" },
    el("td", { title: c.id }, shortCall(c.id)),
    el("td", {}, c.thread_id),
    el("td", {}, c.deps.map((d) => shortCall(d.id) + (d.kind === "thread" ? "" : " (parent)")).join(", ")),
    el("td", {}, c.status),
    el("td", {}, c.engine_id || ""),
    el("td", {}, String(c.level)),
    el("td", { "data-key": "preemptions" }, String(c.preemptions)),
    el("td", { "data-key": "wait_s" }, secs(c.wait_s)),
    el("td", { "data-key": "run_s" }, secs(c.run_s)),
    el("td", {}, `${c.cached_tokens || 0} / ${c.prompt_tokens || 0}`),
    el("td", { "data-key": "critical" }, onPath.has(c.id) ? "yes" : ""),
    el("td", {}, traceLink(c.links)),
  )));
}

export function renderCallGraph(snap, programId) {
  const box = document.getElementById("graph-section");
  const calls = snap.calls.filter((c) => c.program_id === programId);
  const title = document.getElementById("graph-title");
  if (!programId || !calls.length) {
    title.textContent = programId ? `${programId}: no calls in view` : "click a program";
    box.removeAttribute("data-program-id");
    return;
  }
  charts();
  const path = snap.critical_paths[programId] || [];
  const colour = programColour(programId);
  title.textContent = `${programId}: ${calls.length} calls, critical path ${path.length} calls`;
  graph.setOption(graphOption(calls, path, colour), { notMerge: true });
  bars.setOption(barsOption(calls, path, colour), { notMerge: true });
  table(calls, path);
  box.setAttribute("data-program-id", programId);
  box.setAttribute("data-critical", path.join(","));
}
