// Per engine: a Gantt timeline of its calls (vis-timeline) and its queue depth per MLFQ level,
// running vs waiting (ECharts). Items keep their ids across snapshots, so vis-timeline only
// redraws what changed.
import { DataSet, Timeline } from "vis-timeline/standalone";
import { chartIn } from "./charts.js";
import { el, programColour, secs, shortCall } from "./format.js";

const SEGMENT_TEXT = {
  waiting: "waiting in the engine's queues",
  running: "running in the batch",
  preempted: "preempted, waiting to resume (resume time derived from the run time)",
  interrupted: "preempted more than once: running and waiting (resume times are not recorded)",
};
const MARK_TEXT = { preempt: "✕", resume: "▶", cache_hit: "◆", requeue: "↺", fail: "!" };

const views = new Map(); // engine id -> { card, timeline, items, chart }
let follow = true;
let syncing = false;

function callTitle(call, seg) {
  const lines = [
    `call ${call.id}`,
    `program ${call.program_id} / thread ${call.thread_id}`,
    `${seg ? SEGMENT_TEXT[seg.kind] : ""}`,
    `status ${call.status}, level ${call.level}, preemptions ${call.preemptions}`,
    `wait ${secs(call.wait_s)} s, run ${secs(call.run_s)} s`,
  ];
  return lines.join("\n");
}

function markTitle(call, m) {
  if (m.kind === "preempt") {
    return `call ${call.id} preempted` + (m.other_call_id ? ` for ${m.other_call_id}` : "") +
      (m.reason ? `\n${m.reason}` : "");
  }
  if (m.kind === "resume") return `call ${call.id} resumed (derived from its run time)`;
  if (m.kind === "cache_hit") {
    return `call ${call.id}: ${m.cached_tokens} of ${m.prompt_tokens} prompt tokens from the prefix cache`;
  }
  return `call ${call.id}: ${m.kind}` + (m.reason ? `\n${m.reason}` : "");
}

function segmentNode(call, seg) {
  return el("span", {
    class: "seg-label",
    "data-call-id": call.id,
    "data-program-id": call.program_id,
    "data-kind": seg.kind,
    "data-preempted": call.preemptions > 0 ? "true" : null,
    text: `${shortCall(call.id)} ${call.program_id}`,
  });
}

function markNode(call, m) {
  return el("span", {
    class: `mark mark-${m.kind}`,
    "data-call-id": call.id,
    "data-mark": m.kind,
    text: MARK_TEXT[m.kind] || m.kind,
  });
}

function itemsOf(engineId, calls) {
  const out = [];
  for (const call of calls) {
    if (call.engine_id !== engineId) continue;
    const colour = programColour(call.program_id);
    call.segments.forEach((seg, i) => {
      out.push({
        id: `${call.id}:s${i}`,
        start: seg.start,
        end: seg.end,
        type: "range",
        className: `seg seg-${seg.kind}${call.critical ? " seg-critical" : ""}`,
        style: seg.kind === "running"
          ? `background-color:${colour};border-color:${colour};`
          : `border-color:${colour};color:${colour};`,
        title: callTitle(call, seg),
        node: segmentNode(call, seg),
      });
    });
    call.marks.forEach((m, i) => {
      out.push({
        id: `${call.id}:m${i}`,
        start: m.at,
        type: "point",
        className: `mark-item mark-item-${m.kind}`,
        title: markTitle(call, m),
        node: markNode(call, m),
      });
    });
  }
  return out;
}

function setAllWindows(start, end, except) {
  syncing = true;
  for (const [, v] of views) {
    if (v.timeline !== except) v.timeline.setWindow(start, end, { animation: false });
  }
  syncing = false;
}

function makeView(container, engine) {
  const timelineBox = el("div", { class: "timeline", id: `timeline-${engine.id}` });
  const depthBox = el("div", { class: "chart depth", id: `depth-${engine.id}` });
  const head = el("div", { class: "engine-head" });
  const card = el(
    "article",
    { class: "engine", "data-engine-id": engine.id },
    head,
    el(
      "div",
      { class: "engine-body" },
      timelineBox,
      el("div", {}, el("div", { class: "caption" }, "queue depth: calls per MLFQ level, running / waiting"), depthBox),
    ),
  );
  container.append(card);
  const items = new DataSet();
  const timeline = new Timeline(timelineBox, items, {
    stack: true,
    orientation: "top",
    margin: { item: 2, axis: 4 },
    showCurrentTime: true,
    maxHeight: 300,
    minHeight: 120,
    zoomKey: "ctrlKey",
    tooltip: { followMouse: true, overflowMethod: "cap" },
    template: (item) => item.node,
  });
  timeline.on("rangechanged", (props) => {
    if (syncing || !props.byUser) return;
    follow = false;
    document.getElementById("follow")?.removeAttribute("hidden");
    setAllWindows(props.start, props.end, timeline);
  });
  const chart = chartIn(depthBox);
  return { card, head, timeline, items, chart };
}

function engineHead(view, engine, calls) {
  const mine = calls.filter((c) => c.engine_id === engine.id);
  const preempted = mine.filter((c) => c.preemptions > 0).length;
  view.head.replaceChildren(
    el("h3", {}, engine.id),
    el("span", { class: `status status-${engine.status}` }, engine.status),
    el("span", {}, `${engine.backend} · ${engine.model}`),
    el("span", {}, `running ${engine.running} / batch ${engine.max_batch}, waiting ${engine.waiting}`),
    el("span", { class: "engine-calls" }, `${mine.length} calls in view, ${preempted} preempted`),
  );
}

function depthOption(series) {
  const t = series ? series.t : [];
  const lines = [];
  const add = (state, levels) => {
    for (const [lv, ys] of Object.entries(levels || {})) {
      lines.push({
        name: `${state} L${lv}`,
        type: "line",
        stack: state,
        showSymbol: false,
        step: "end",
        areaStyle: state === "waiting" ? { opacity: 0.35 } : undefined,
        lineStyle: state === "running" ? { width: 2 } : { width: 1 },
        data: t.map((x, i) => [x, ys[i]]),
      });
    }
  };
  add("running", series && series.running);
  add("waiting", series && series.waiting);
  return {
    animation: false,
    tooltip: { trigger: "axis" },
    legend: { top: 0, left: 0, textStyle: { fontSize: 10 }, itemHeight: 8, itemWidth: 14 },
    grid: { left: 30, right: 10, top: 44, bottom: 22 },
    xAxis: {
      type: "time",
      splitNumber: 3,
      axisLabel: { hideOverlap: true, fontSize: 10, formatter: "{HH}:{mm}:{ss}" },
    },
    yAxis: { type: "value", minInterval: 1 },
    series: lines,
  };
}

export function renderEngines(snap) {
  const container = document.getElementById("engines");
  const ids = new Set(snap.engines.map((e) => e.id));
  const engines = [...snap.engines];
  for (const c of snap.calls) {
    if (c.engine_id && !ids.has(c.engine_id)) {
      ids.add(c.engine_id);
      engines.push({ id: c.engine_id, status: "unknown", backend: "?", model: "?", running: 0, waiting: 0, max_batch: 0 });
    }
  }
  if (!document.getElementById("follow")) {
    const button = el("button", { id: "follow", hidden: true, onclick: () => {
      follow = true;
      button.setAttribute("hidden", "");
    } }, "follow live");
    container.before(button);
  }
  let earliest = snap.now;
  for (const c of snap.calls) {
    for (const s of c.segments) earliest = Math.min(earliest, s.start);
  }
  for (const engine of engines) {
    if (!views.has(engine.id)) views.set(engine.id, makeView(container, engine));
    const view = views.get(engine.id);
    engineHead(view, engine, snap.calls);
    const items = itemsOf(engine.id, snap.calls);
    const keep = new Set(items.map((i) => i.id));
    view.items.remove(view.items.getIds().filter((id) => !keep.has(id)));
    view.items.update(items);
    view.chart.setOption(depthOption(snap.queue_depth[engine.id]), { notMerge: true });
  }
  for (const [id, view] of views) {
    if (!ids.has(id)) {
      view.timeline.destroy();
      view.chart.dispose();
      view.card.remove();
      views.delete(id);
    }
  }
  if (follow && views.size) {
    const start = Math.max(snap.now - snap.window_s * 1000, earliest - 1000);
    setAllWindows(start, snap.now + Math.max(1000, (snap.now - start) * 0.03));
  }
  container.setAttribute("data-engines", String(views.size));
}
