"""Streaming readers for large JSON files, and seeded sampling that never holds the whole file.

The public ShareGPT file is a single ~650 MB JSON array; `json.load` would need several GB of
memory and ~30 s before the first program. We iterate its items with ijson (C backend) when it is
installed, else with a chunked `json.JSONDecoder.raw_decode` loop. Both yield one item at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


def _first_char(path: Path) -> str:
    with path.open("rb") as f:
        while True:
            b = f.read(4096)
            if not b:
                return ""
            s = b.lstrip()
            if s:
                return s[:1].decode("ascii", "replace")


def iter_json_array(path: str | Path) -> Iterator[Any]:
    """Yield the items of a top-level JSON array one at a time."""
    path = Path(path)
    try:
        import ijson
    except ImportError:  # pragma: no cover - exercised only without ijson
        yield from _iter_array_raw(path)
        return
    with path.open("rb") as f:
        yield from ijson.items(f, "item", use_float=True)


def _iter_array_raw(path: Path) -> Iterator[Any]:
    """Fallback streaming parser: decode one array element at a time from a sliding buffer."""
    dec = json.JSONDecoder()
    with path.open("r", encoding="utf-8") as f:
        buf = f.read(_CHUNK).lstrip()
        if not buf.startswith("["):
            raise ValueError(f"{path}: not a JSON array")
        buf, pos, eof = buf[1:], 0, False
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buf) and buf[pos] == "]":
                return
            try:
                item, end = dec.raw_decode(buf, pos)
            except json.JSONDecodeError:
                if eof:
                    raise
                more = f.read(_CHUNK)
                eof = not more
                buf, pos = buf[pos:] + more, 0
                continue
            yield item
            pos = end
            if pos > _CHUNK:
                buf, pos = buf[pos:], 0


def iter_json_lines(path: str | Path) -> Iterator[Any]:
    """Yield one object per non-empty line (JSON Lines, as BFCL ships its `BFCL_*.json`)."""
    with Path(path).open("r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def iter_json_records(path: str | Path) -> Iterator[Any]:
    """Items of a JSON array file, or the lines of a JSON Lines file, whichever `path` is."""
    path = Path(path)
    if _first_char(path) == "[":
        yield from iter_json_array(path)
    else:
        yield from iter_json_lines(path)


def sample(
    items: Iterable[Any], n: int | None, rng: np.random.Generator, method: str = "reservoir"
) -> list[Any]:
    """A seeded sample of `n` items from a stream (all of them when `n` is None).

    `reservoir` (Algorithm R) reads the whole stream once but keeps only `n` items: a uniform
    sample, the default. `head` takes the first `n` and stops reading: fastest on a huge file,
    but biased towards the file's order. The result keeps stream order; callers shuffle.
    """
    if n is None:
        return list(items)
    if n <= 0:
        return []
    if method == "head":
        out: list[Any] = []
        for it in items:
            out.append(it)
            if len(out) >= n:
                break
        return out
    if method != "reservoir":
        raise ValueError(f"unknown sampling method {method!r} (head or reservoir)")
    res: list[tuple[int, Any]] = []
    for i, it in enumerate(items):
        if i < n:
            res.append((i, it))
        else:
            j = int(rng.integers(0, i + 1))
            if j < n:
                res[j] = (i, it)
    res.sort(key=lambda t: t[0])
    return [it for _, it in res]
