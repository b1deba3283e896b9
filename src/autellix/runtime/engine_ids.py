"""The ids of an engine host's light identities (`--identities N`).

Why here: the engine host names its identities and whoever starts a host (`autellix.local.stack`,
the cluster benchmark) must know those names to wait for their heartbeats; services are never
imported by launchers, so the naming rule lives in shared code.
"""

from __future__ import annotations


def identity_ids(base: str, count: int) -> list[str]:
    """`<base>-0000`, `<base>-0001`, ...: zero-padded, so id order is number order."""
    width = max(4, len(str(count - 1)))
    return [f"{base}-{k:0{width}d}" for k in range(count)]
