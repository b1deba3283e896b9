"""Hypothesis strategies for hostile bus messages: bytes, broken JSON, and JSON built from a
message's JSON Schema with some of its values made wrong.

Why our own schema walker and not `hypothesis-jsonschema`: that package (0.23, its latest)
fails on every object schema with current Hypothesis releases (`'many' object has no attribute
'more'`). A fuzzer also wants more than valid instances: here each node of a schema-built value
is, at a per-case rate, replaced by a value of the wrong type or out of range, a required key
dropped or an unknown one added; rate 0 gives valid instances, which exercise everything past
validation. The walker covers what pydantic's `model_json_schema()` emits: `$ref`/`$defs`,
`anyOf`, `type`, `enum`, `const`, numeric bounds, string lengths and patterns, arrays, objects
with `required` and `additionalProperties`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

Schema = Mapping[str, Any]

#: how often a node is made wrong, per case (0: a valid instance)
CORRUPTION_RATES = (0.0, 0.0, 0.0, 0.05, 0.15, 0.4)
#: values that break code which trusts types and ranges: huge and negative numbers, NUL, lone
#: surrogates, empty and very long strings, floats at the edge of float64
EDGE_VALUES: tuple[Any, ...] = (
    -1,
    0,
    2**31,
    2**63,
    2**70,
    -(2**70),
    1e308,
    -1e-308,
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\ud7ff\ue000\U0010ffff",
    "x" * 20_000,
    [],
    {},
    None,
    True,
)

_SHORT_TEXT = st.text(max_size=24)


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value, small, with the edge values mixed in."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | _SHORT_TEXT
        | st.sampled_from(EDGE_VALUES)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_SHORT_TEXT, inner, max_size=4),
        max_leaves=12,
    )


def _resolve(schema: Schema, root: Schema) -> Schema:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["$defs"][name]
    return schema


class _Builder:
    """One value for `root`, drawn node by node (see the module doc)."""

    def __init__(self, draw: Any, root: Schema, rate: float, caps: Mapping[str, int]) -> None:
        self.draw, self.root, self.rate, self.caps = draw, root, rate, caps

    def wrong(self) -> bool:
        return self.rate > 0 and self.draw(st.floats(0, 1)) < self.rate

    def value(self, schema: Schema, name: str = "") -> Any:
        if self.wrong():
            return self.draw(json_values())
        schema = _resolve(schema, self.root)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.draw(st.sampled_from(schema["enum"]))
        if "anyOf" in schema:
            return self.value(self.draw(st.sampled_from(schema["anyOf"])), name)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = self.draw(st.sampled_from(kind))
        build = getattr(self, f"_{kind}", None)
        return self.draw(json_values()) if build is None else build(schema, name)

    def _null(self, schema: Schema, name: str) -> None:
        return None

    def _boolean(self, schema: Schema, name: str) -> bool:
        return bool(self.draw(st.booleans()))

    def _integer(self, schema: Schema, name: str) -> int:
        lo = schema.get("minimum", schema.get("exclusiveMinimum", -(2**40) - 1) + 1)
        hi = schema.get("maximum", schema.get("exclusiveMaximum", 2**40 + 1) - 1)
        if name in self.caps:
            hi = min(hi, self.caps[name])
        return int(self.draw(st.integers(int(lo), int(max(lo, hi)))))

    def _number(self, schema: Schema, name: str) -> float:
        return float(
            self.draw(
                st.floats(
                    min_value=schema.get("minimum", schema.get("exclusiveMinimum")),
                    max_value=schema.get("maximum", schema.get("exclusiveMaximum")),
                    exclude_min="exclusiveMinimum" in schema,
                    exclude_max="exclusiveMaximum" in schema,
                    allow_nan=False,
                    allow_infinity=False,
                )
            )
        )

    def _string(self, schema: Schema, name: str) -> str:
        if "pattern" in schema:
            return str(self.draw(st.from_regex(schema["pattern"], fullmatch=True)))
        if schema.get("format") == "date-time":
            return str(self.draw(st.datetimes()).isoformat() + "Z")
        lo = schema.get("minLength", 0)
        return str(
            self.draw(st.text(min_size=lo, max_size=max(lo, min(48, schema.get("maxLength", 48)))))
        )

    def _array(self, schema: Schema, name: str) -> list[Any]:
        lo = schema.get("minItems", 0)
        n = self.draw(st.integers(lo, max(lo, min(4, schema.get("maxItems", 4)))))
        items = schema.get("items", {})
        return [self.value(items, name) for _ in range(n)]

    def _object(self, schema: Schema, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        required = set(schema.get("required", ()))
        for key, sub in schema.get("properties", {}).items():
            if (key in required and not self.wrong()) or self.draw(st.booleans()):
                out[key] = self.value(sub, key)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            n = self.draw(st.integers(0, min(3, schema.get("maxProperties", 3))))
            for _ in range(n):
                out[self.draw(_SHORT_TEXT)] = self.value(extra, name)
        if self.wrong():  # a key the model does not know
            out[self.draw(_SHORT_TEXT)] = self.draw(json_values())
        return out


def from_model_schema(
    schema: Schema,
    caps: Mapping[str, int] | None = None,
    rates: tuple[float, ...] = CORRUPTION_RATES,
) -> st.SearchStrategy[Any]:
    """JSON values shaped by `schema`, some of them made wrong (see the module doc). `caps`
    bounds integer properties by name (the fuzz keeps valid calls short: `max_tokens`); each
    value is drawn at one of `rates`."""

    @st.composite
    def build(draw: Any) -> Any:
        rate = draw(st.sampled_from(rates))
        return _Builder(draw, schema, rate, caps or {}).value(schema)

    return build()


def _dumps(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def payloads(schema: Schema, caps: Mapping[str, int] | None = None) -> st.SearchStrategy[bytes]:
    """What a hostile peer sends on a subject whose message has `schema`: mostly schema-shaped
    JSON (right and wrong), also arbitrary bytes, arbitrary JSON, truncated JSON and deep
    nesting."""
    shaped = st.builds(_dumps, from_model_schema(schema, caps), st.booleans())
    truncated = st.tuples(shaped, st.integers(0, 200)).map(lambda t: t[0][: t[1]])
    deep = st.tuples(st.sampled_from([b"[", b'{"a":', b'{"program_id": ['])).flatmap(
        lambda t: st.integers(60, 5000).map(lambda n: t[0] * n)
    )
    return st.one_of(
        *[shaped] * 6,
        st.binary(max_size=256),
        st.builds(_dumps, json_values(), st.booleans()),
        truncated,
        deep,
    )


def headers() -> st.SearchStrategy[dict[str, str] | None]:
    """NATS headers a hostile peer might add: trace context and message ids, often garbage."""
    printable = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=80)
    return st.none() | st.fixed_dictionaries(
        {}, optional={"traceparent": printable, "tracestate": printable, "Nats-Msg-Id": printable}
    )


def fuzz_settings(cases: int) -> settings:
    """Hypothesis settings for a fuzz run of `cases` examples: generation only (a failing case
    is reported as it was sent, not shrunk against a live stack), no example database, no
    deadline or health checks (a live stack's latency is not the test's subject)."""
    return settings(
        max_examples=cases,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
