"""chaos.json, chaos.md and chaos.png from one run's result, and its verdict on the goals.

Goals: lost = 0 and duplicated = 0 for every fault, recovery within `RECOVERY_GOAL_S`, the fuzz
with 0 crashes and 0 internal errors, and RSS flat over a soak (reported as each service's
growth from the soak's first to its last fifth; judged by the reader, with the plot).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autellix.bench.chaos.accounting import HEALTHY_FRACTION, HOLD_S, STEP_S, WINDOW_S
from autellix.bench.reporting import fmt, md_table_lines, pyplot, save_figure

__all__ = ["RECOVERY_GOAL_S", "misses", "write_outputs"]

RECOVERY_GOAL_S = 5.0

RECOVERY_DEFINITION = (
    f"r0 = completed calls per second over the pre-fault window before the kill. A "
    f"{WINDOW_S:g} s window is healthy when it holds >= {HEALTHY_FRACTION:g} x r0 x "
    f"{WINDOW_S:g} completions. recovery_s = the smallest t (from the kill, on a {STEP_S:g} s "
    f"grid) such that every window starting in [t, t + {HOLD_S:g} s] is healthy: 0 when the "
    f"rate never dipped, '-' when it was not back before the observation ended."
)


def misses(result: dict[str, Any]) -> list[str]:
    """Every goal the run missed, in words (empty: all met)."""
    out = []
    for f in result["faults"]:
        name = f["fault"]
        if f["lost"]:
            out.append(f"{name}: {f['lost']} lost")
        if f["duplicated"]:
            out.append(f"{name}: {f['duplicated']} duplicated")
        if name in _killed(result) and (
            f["recovery_s"] is None or f["recovery_s"] > RECOVERY_GOAL_S
        ):
            out.append(f"{name}: recovery {fmt(f['recovery_s'])} s > {RECOVERY_GOAL_S:g} s")
    fz = result.get("fuzz")
    if fz is not None and (fz["crashes"] or fz["internal_errors"]):
        out.append(f"fuzz: {fz['crashes']} crashes, {fz['internal_errors']} internal errors")
    detail = result.get("fuzz_detail") or {}
    if detail and not detail.get("still_serving", True):
        out.append(f"after the fuzz not serving: {detail.get('not_serving')}")
    return out


def _killed(result: dict[str, Any]) -> set[str]:
    return {s["fault"] for s in result["series"] if s["kill_s"] is not None}


def rss_growth(result: dict[str, Any]) -> dict[str, float]:
    """Per service, MiB of its mean RSS over the soak's last fifth minus its first fifth."""
    samples = (result.get("soak") or {}).get("rss") or []
    if len(samples) < 5:
        return {}
    k = max(1, len(samples) // 5)
    first, last = samples[:k], samples[-k:]
    out = {}
    for name in samples[0]["rss_mib"]:
        a = [s["rss_mib"].get(name, 0.0) for s in first]
        b = [s["rss_mib"].get(name, 0.0) for s in last]
        out[name] = round(sum(b) / len(b) - sum(a) / len(a), 1)
    return out


def markdown(result: dict[str, Any], command: str) -> str:
    header = [
        "fault",
        "accepted",
        "completed",
        "failed explicitly",
        "lost",
        "duplicated",
        "recovery_s",
        "restarted at (s)",
        "stack ready at (s)",
        "pre-fault rate (calls/s)",
        "not accepted",
        "replayed",
        "error codes",
    ]
    rows = []
    for f in result["faults"]:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(f["error_codes"].items())) or "-"
        rows.append(
            [
                f["fault"],
                str(f["accepted"]),
                str(f["completed"]),
                str(f["failed_explicitly"]),
                f"**{f['lost']}**",
                f"**{f['duplicated']}**",
                fmt(f["recovery_s"]),
                fmt(f.get("restarted_s")),
                fmt(f.get("ready_s")),
                fmt(f["pre_fault_rate"]),
                str(f["not_accepted"]),
                str(f.get("replayed", 0)),
                codes,
            ]
        )
    cfg = result["config"]
    lines = [
        "# autellix chaos",
        "",
        f"`{command}`",
        "",
        f"{cfg['engines']} simulated engines (batch {cfg['max_batch']}), {cfg['schedulers']} "
        f"scheduler replicas, one frontend, embedded nats-server (JetStream file store) and "
        f"Postgres, each a process restarted by the stack's supervisor after a SIGKILL; "
        f"{cfg['programs']} programs at a time (chain / fan-out / long, streamed, client "
        f"resume on), call deadline {cfg['call_timeout_s']:g} s. "
        f"{result['programs_opened']} programs, {result['duration_s']:g} s in all.",
        "",
        *md_table_lines(header, rows),
        "",
        "* **accepted**: stored by the frontend (its Postgres row) or given a call id; "
        "**not accepted**: refused with an explicit error while a part was down (the load "
        "resubmits under the same client call id until the call's deadline).",
        "* **lost**: accepted and never answered within the deadline. **duplicated**: answered "
        "twice with different answers (on the wire or in the stream), or a completed stream "
        "whose token ids differ from its final's or from those Postgres stored. **replayed**: "
        "the same final twice on the wire, because the client resent the call under its client "
        "call id before its acceptance arrived and the frontend answered the resend with the "
        "stored final (the client keeps the first copy).",
        f"* **recovery_s**: {RECOVERY_DEFINITION}",
        "* restarted at / stack ready at: seconds from the kill to the supervisor's restart and "
        "to every engine heartbeating and the frontend answering again.",
        "",
    ]
    missed = misses(result)
    lines += ["## Goals", ""]
    lines += (
        [f"* missed: {m}" for m in missed]
        if missed
        else [f"* all met: lost = 0, duplicated = 0, recovery <= {RECOVERY_GOAL_S:g} s"]
    )
    fz = result.get("fuzz")
    if fz is not None:
        lines += [
            "",
            "## Fuzz",
            "",
            f"{fz['cases']} cases on every NATS subject: {fz['crashes']} crashes, "
            f"{fz['internal_errors']} internal errors; still serving afterwards: "
            f"{(result.get('fuzz_detail') or {}).get('still_serving')}.",
        ]
    growth = rss_growth(result)
    if growth:
        lines += [
            "",
            "## Soak",
            "",
            f"{result['soak']['minutes']:g} minutes of load without faults. Memory growth "
            "(PSS summed over each service's processes), mean of the last fifth minus the "
            "first fifth (MiB): " + ", ".join(f"{k} {v:+g}" for k, v in growth.items()),
        ]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    series = [s for s in result["series"] if s["kill_s"] is not None]
    soak = (result.get("soak") or {}).get("rss") or []
    n = len(series) + (1 if soak else 0)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.3 * n), squeeze=False)
    faults = {f["fault"]: f for f in result["faults"]}
    for ax, s in zip(axes[:, 0], series, strict=False):
        f = faults[s["fault"]]
        xs = [t for t, _ in s["rate"]]
        ys = [r for _, r in s["rate"]]
        ax.step(xs, ys, where="post", lw=1.2, label="completed calls/s (0.5 s bins)")
        ax.axvline(s["kill_s"], color="red", lw=1.5, label="SIGKILL")
        if s["restarted_s"] is not None:
            ax.axvline(s["restarted_s"], color="orange", ls="--", lw=1, label="restarted")
        if s["ready_s"] is not None:
            ax.axvline(s["ready_s"], color="green", ls=":", lw=1, label="stack ready")
        ax.axhline(
            HEALTHY_FRACTION * f["pre_fault_rate"], color="gray", ls="--", lw=0.8,
            label=f"{HEALTHY_FRACTION:g} x pre-fault rate",
        )  # fmt: skip
        if f["recovery_s"] is not None:
            ax.axvspan(s["kill_s"], s["kill_s"] + f["recovery_s"], color="red", alpha=0.1)
        ax.set_title(
            f"{s['fault']}: lost {f['lost']}, duplicated {f['duplicated']}, "
            f"recovery {fmt(f['recovery_s'])} s",
            fontsize=9,
        )
        ax.set_ylabel("calls/s")
        ax.grid(alpha=0.3)
    if series:
        axes[0, 0].legend(fontsize=7, loc="lower right", ncol=3)
        axes[len(series) - 1, 0].set_xlabel("seconds (kill at the red line)")
    if soak:
        ax = axes[-1, 0]
        for name in soak[0]["rss_mib"]:
            ax.plot(
                [x["t"] / 60 for x in soak], [x["rss_mib"].get(name, 0) for x in soak], label=name
            )
        ax.set_title(
            "soak: resident memory of each service (PSS summed over its process tree)", fontsize=9
        )
        ax.set_xlabel("minutes")
        ax.set_ylabel("MiB")
        ax.set_yscale("log")
        ax.legend(fontsize=7, ncol=4)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def write_outputs(out: Path, result: dict[str, Any], command: str) -> dict[str, Path]:
    """DIR/chaos.json, DIR/chaos.md and DIR/chaos.png; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "chaos.json", "md": out / "chaos.md", "png": out / "chaos.png"}
    body = dict(result)
    body["command"] = command
    body["recovery_definition"] = RECOVERY_DEFINITION
    body["goals_missed"] = misses(result)
    paths["json"].write_text(json.dumps(body, indent=2) + "\n")
    paths["md"].write_text(markdown(result, command))
    plot(result, paths["png"])
    return paths
