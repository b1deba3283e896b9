"""One dashboard tab for `bench overhead --dashboard-browsers`, reading `/ui/api/events` in a
process of its own: `python -m autellix.bench.sse_reader URL`.

Why a process: a browser reads and renders the dashboard in processes of its own. Read on the
benchmark's client loop instead, ~350 KB of server-sent events a second per tab were parsed
between the measured calls, so the calls waited behind the benchmark's own reader and that wait
was charged to the dashboard. Here the parent reads one short line per event from this
process's stdout: `hello <poll_s>`, `snapshot <bytes>` and `delta <bytes>`.
"""

from __future__ import annotations

import asyncio
import json
import sys


async def read(url: str) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=None) as http, http.stream("GET", url) as resp:
        resp.raise_for_status()
        event = ""
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event in ("snapshot", "delta"):
                    print(f"{event} {len(line) - 6}", flush=True)
                elif event == "hello":
                    print(f"hello {float(json.loads(line[6:])['poll_s'])}", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m autellix.bench.sse_reader URL", file=sys.stderr)
        return 2
    try:
        asyncio.run(read(argv[0]))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
