"""The settings a multi-host deployment sets: NATS server lists, JetStream replicas and the
Postgres pooler mode, from flags and environment as every service resolves them."""

from __future__ import annotations

import pytest

from autellix.runtime.settings import js_replicas, nats_servers, resolve
from autellix.store.db import connection_options
from autellix.transport.bus import stream_configs
from autellix.wire.protocol import Subjects


def test_a_nats_url_may_list_servers() -> None:
    assert nats_servers(" nats://a:4222, nats://b:4222,,nats://c:4222 ") == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]
    with pytest.raises(ValueError):
        nats_servers(" , ")


def test_js_replicas_from_flag_then_environment() -> None:
    env = {"AUTELLIX_JS_REPLICAS": "3"}
    assert js_replicas({}) is None
    assert js_replicas(env) == 3
    assert resolve(environ=env).js_replicas == 3
    assert resolve(environ=env, js_replicas=1).js_replicas == 1
    assert resolve(environ=env).to_env()["AUTELLIX_JS_REPLICAS"] == "3"
    assert "AUTELLIX_JS_REPLICAS" not in resolve(environ={}).to_env()
    for bad in ("0", "6", "three"):
        with pytest.raises(ValueError, match="AUTELLIX_JS_REPLICAS"):
            js_replicas({"AUTELLIX_JS_REPLICAS": bad})


def test_every_stream_takes_the_replica_count() -> None:
    assert {c.num_replicas for c in stream_configs(Subjects("x"), 3)} == {3}
    assert {c.num_replicas for c in stream_configs(Subjects("x"))} == {1}


def test_transaction_pooling_drops_session_state(monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = {"jit": "off", "application_name": "autellix-engine", "synchronous_commit": "off"}
    monkeypatch.delenv("AUTELLIX_PG_POOL_MODE", raising=False)
    assert connection_options(wanted) == {"server_settings": wanted}
    monkeypatch.setenv("AUTELLIX_PG_POOL_MODE", "transaction")
    assert connection_options(wanted) == {
        "server_settings": {"application_name": "autellix-engine"},
        "statement_cache_size": 0,
    }
    monkeypatch.setenv("AUTELLIX_PG_POOL_MODE", "statement")
    with pytest.raises(ValueError, match="AUTELLIX_PG_POOL_MODE"):
        connection_options(wanted)
