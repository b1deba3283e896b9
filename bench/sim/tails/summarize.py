"""Summarise bench/sim/tails/<workload>-s<seed>/<guard>/results.json (SIMULATED): per workload
and seed, each policy and guard's average and p99 program latency and average latency per token
over fcfs's in the same sweep, and whether the tail goal (p99 <= 1.5x fcfs's) is met while the
mean gain (average latency per token below fcfs's) is kept; writes summary.md, summary.json and
summary.png next to the runs.

    python bench/sim/tails/summarize.py bench/sim/tails
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

GOAL_P99 = 1.5


def _rows(root: Path) -> list[dict[str, Any]]:
    rows = []
    for res in sorted(root.glob("*-s*/*/results.json")):
        guard = res.parent.name
        data = json.loads(res.read_text())
        for run in data["runs"]:
            rows.append(
                {
                    "case": res.parent.parent.name,
                    "guard": guard,
                    "policy": run["policy"],
                    "rate": run["rate"],
                    "avg_latency_s": run["avg_latency_s"],
                    "p99_latency_s": run["p99_latency_s"],
                    "lpt_s": run["avg_latency_per_token_s"],
                    "command": data["meta"]["command"],
                }
            )
    return rows


def _judge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fcfs = {r["case"]: r for r in rows if r["policy"] == "fcfs"}
    plain = {(r["case"], r["policy"]): r for r in rows if r["guard"] == "none"}
    out = []
    for r in rows:
        f = fcfs.get(r["case"])
        if f is None or r["policy"] == "fcfs":
            continue
        p = plain[(r["case"], r["policy"])]
        lpt, p99 = r["lpt_s"] / f["lpt_s"], r["p99_latency_s"] / f["p99_latency_s"]
        gain0 = 1.0 - p["lpt_s"] / f["lpt_s"]  # the unguarded policy's mean gain over fcfs
        kept = (1.0 - lpt) / gain0 if gain0 > 0 else None
        out.append(
            {
                **r,
                "avg_x_fcfs": r["avg_latency_s"] / f["avg_latency_s"],
                "p99_x_fcfs": p99,
                "lpt_x_fcfs": lpt,
                "gain_kept": kept,
                "tail_met": p99 <= GOAL_P99,
                "met": p99 <= GOAL_P99 and (kept is None or kept > 0),
            }
        )
    return out


def _md(judged: list[dict[str, Any]]) -> str:
    lines = [
        "# Tails at 1.2x FCFS's saturation rate (SIMULATED)",
        "",
        "Per workload and seed: each policy (guard: none, age rule `age_s=A`, slowdown rule",
        "`slowdown=S`) over fcfs in the same sweep. Goal: p99 program latency <= 1.5x fcfs's,",
        "keeping the mean gain (average latency per token below fcfs's; `kept` = the share of the",
        "unguarded policy's gain left, `-` where the unguarded policy had none to keep).",
        "",
        "| case | policy | guard | avg latency x fcfs | p99 x fcfs | latency/token x fcfs "
        "| kept | p99 goal | both |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in judged:
        g = r["gain_kept"]
        kept = "-" if g is None else (f"{g:.0%}" if g > 0 else "none (worse than fcfs)")
        lines.append(
            f"| {r['case']} | {r['policy']} | {r['guard']} | {r['avg_x_fcfs']:.2f}x "
            f"| {r['p99_x_fcfs']:.2f}x | {r['lpt_x_fcfs']:.2f}x | {kept} "
            f"| {'met' if r['tail_met'] else 'missed'} | {'met' if r['met'] else 'missed'} |"
        )
    return "\n".join(lines) + "\n"


def _png(judged: list[dict[str, Any]], path: Path) -> None:
    cases = sorted({r["case"] for r in judged})
    guards = sorted({r["guard"] for r in judged}, key=lambda g: (g != "none", g))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(guards)
    for ax, key, title in (
        (axes[0], "p99_x_fcfs", "gittins p99 program latency / fcfs"),
        (axes[1], "lpt_x_fcfs", "gittins avg latency per token / fcfs"),
    ):
        for gi, g in enumerate(guards):
            ys = [
                next(
                    (
                        r[key]
                        for r in judged
                        if r["case"] == c and r["guard"] == g and r["policy"] == "gittins"
                    ),
                    float("nan"),
                )
                for c in cases
            ]
            ax.bar([i + gi * width for i in range(len(cases))], ys, width, label=g)
        ax.axhline(GOAL_P99 if key == "p99_x_fcfs" else 1.0, color="k", ls="--", lw=1)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))], cases, rotation=20)
        ax.set_title(f"{title} (SIMULATED)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(root: Path) -> None:
    judged = _judge(_rows(root))
    (root / "summary.md").write_text(_md(judged))
    (root / "summary.json").write_text(
        json.dumps({"simulated": True, "goal_p99_x_fcfs": GOAL_P99, "rows": judged}, indent=1)
    )
    _png(judged, root / "summary.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
