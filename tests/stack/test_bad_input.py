"""Bad input through real processes: every malformed request gets a typed CallError and a log
line, and the services keep serving. Also: services refuse an un-migrated database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from svc_stack import Stack, WireRecorder, stack_fixture

from autellix.wire.protocol import (
    CALL_REPLY,
    MAX_PROMPT_TOKENS,
    CallAccepted,
    CallError,
    CallFinal,
    CallRequest,
    ErrorCode,
    SamplingParams,
)

stack = stack_fixture(engines={"bad-e1": ("--max-model-len", "512")})

GOOD = {"program_id": "bad-input-prog", "prompt": "hello", "sampling": {"max_tokens": 3}}

CASES: list[tuple[str, bytes, ErrorCode, str]] = [
    ("malformed json", b'{"program_id": "p", "prompt": ', ErrorCode.invalid_json, ""),
    ("empty body", b"", ErrorCode.invalid_json, ""),
    ("not utf-8", b"\xff\xfe\x00garbage", ErrorCode.invalid_json, ""),
    ("json array", b"[1, 2, 3]", ErrorCode.validation_error, "JSON object"),
    (
        "missing program id",
        json.dumps({"prompt": "hi"}).encode(),
        ErrorCode.validation_error,
        "program_id",
    ),
    (
        "wrong types",
        json.dumps(
            {"program_id": 17, "prompt": ["a"], "sampling": {"max_tokens": "many"}}
        ).encode(),
        ErrorCode.validation_error,
        "max_tokens",
    ),
    (
        "negative max_tokens",
        json.dumps({**GOOD, "sampling": {"max_tokens": -5}}).encode(),
        ErrorCode.validation_error,
        "max_tokens",
    ),
    (
        "bad id characters",
        json.dumps({**GOOD, "program_id": "has spaces/and slashes"}).encode(),
        ErrorCode.validation_error,
        "program_id",
    ),
    (
        "no prompt",
        json.dumps({"program_id": "p"}).encode(),
        ErrorCode.validation_error,
        "exactly one of",
    ),
    (
        "two prompts",
        json.dumps({**GOOD, "prompt_token_ids": [1, 2]}).encode(),
        ErrorCode.validation_error,
        "exactly one of",
    ),
    (
        "unknown field",
        json.dumps({**GOOD, "priority": 1}).encode(),
        ErrorCode.validation_error,
        "priority",
    ),
    (
        "unknown schema version",
        json.dumps({**GOOD, "v": 2}).encode(),
        ErrorCode.unsupported_version,
        "version",
    ),
    (
        "NUL character in the prompt",
        json.dumps({**GOOD, "prompt": "a\x00b"}).encode(),
        ErrorCode.validation_error,
        "NUL",
    ),
    (
        "NUL character in a chat message",
        json.dumps({"program_id": "p", "messages": [{"role": "user", "content": "\x00"}]}).encode(),
        ErrorCode.validation_error,
        "NUL",
    ),
    (
        "NUL character in a metadata key",
        json.dumps({**GOOD, "metadata": {"k\x00": "v"}}).encode(),
        ErrorCode.validation_error,
        "NUL",
    ),
    (
        "100,000-deep nested array",
        b'{"program_id": "p", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        ErrorCode.validation_error,
        "nests deeper",
    ),
    (
        "100,000-deep unclosed object",
        b'{"a":' * 100_000,
        ErrorCode.validation_error,
        "nests deeper",
    ),
    (
        "token id of 2**70",
        json.dumps({"program_id": "p", "prompt_token_ids": [1, 2**70]}).encode(),
        ErrorCode.validation_error,
        "prompt_token_ids",
    ),
    (
        "negative token id",
        json.dumps({"program_id": "p", "prompt_token_ids": [-1]}).encode(),
        ErrorCode.validation_error,
        "prompt_token_ids",
    ),
    (
        "stop token id of 2**40",
        json.dumps({**GOOD, "sampling": {"stop_token_ids": [2**40]}}).encode(),
        ErrorCode.validation_error,
        "stop_token_ids",
    ),
    (
        "oversized prompt",
        json.dumps({"program_id": "p", "prompt_token_ids": [1] * (MAX_PROMPT_TOKENS + 1)}).encode(),
        ErrorCode.validation_error,
        "prompt_token_ids",
    ),
]


async def _log_contains(stack: Stack, name: str, text: str, wait_s: float = 15.0) -> bool:
    """Log lines reach the supervisor asynchronously (a pipe read by a thread): poll for them."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while text not in stack.logs(name):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


@pytest.mark.parametrize(("name", "payload", "code", "mentions"), CASES, ids=[c[0] for c in CASES])
async def test_bad_request_gets_typed_error_and_service_keeps_serving(
    stack: Stack, wire: WireRecorder, name: str, payload: bytes, code: ErrorCode, mentions: str
) -> None:
    bad = await wire.submit_raw(payload)
    await asyncio.wait_for(bad.done.wait(), 15)
    await asyncio.sleep(0.2)
    assert len(bad.messages) == 1, bad.messages  # one answer, and not an acceptance
    err = bad.messages[0]
    assert isinstance(err, CallError) and err.code == code, err
    assert mentions in err.message
    # the frontend logged it, as one JSON line with the error code
    await _log_contains(stack, "frontend", f'"code": "{code.value}"')
    log = stack.logs("frontend")
    assert any(
        '"event": "rejected call request"' in line and f'"code": "{code.value}"' in line
        for line in log.splitlines()
    ), log[-2000:]
    # and still serves good calls
    good = await wire.run(CallRequest.model_validate(GOOD), wait_s=30)
    assert isinstance(good.messages[0], CallAccepted)
    assert isinstance(good.terminal[0], CallFinal)
    assert stack.group.running() == stack.group.names


async def test_prompt_longer_than_the_engine_allows(stack: Stack, wire: WireRecorder) -> None:
    req = CallRequest(
        program_id="bad-input-prog",
        prompt="far too long for a 512-token model " * 100,
        sampling=SamplingParams(max_tokens=8),
    )
    call = await wire.run(req, wait_s=30)
    assert isinstance(call.messages[0], CallAccepted)
    (err,) = call.terminal
    assert isinstance(err, CallError) and err.code == ErrorCode.prompt_too_long
    assert err.call_id == call.call_id and "512" in err.message
    assert await _log_contains(stack, "bad-e1", "call failed")


async def test_token_ids_outside_the_vocabulary_are_refused_not_run(
    stack: Stack, wire: WireRecorder
) -> None:
    """The wire format bounds token ids; the engine knows its model's vocabulary (the sim
    model's is 32,000) and refuses ids beyond it with validation_error before generating."""
    for req in (
        CallRequest(program_id="bad-input-prog", prompt_token_ids=[5, 32_000]),
        CallRequest(
            program_id="bad-input-prog",
            prompt="hi",
            sampling=SamplingParams(max_tokens=4, stop_token_ids=[1_000_000]),
        ),
    ):
        call = await wire.run(req, wait_s=30)
        assert isinstance(call.messages[0], CallAccepted)
        (err,) = call.terminal
        assert isinstance(err, CallError) and err.code == ErrorCode.validation_error, err
        assert "outside its vocabulary" in err.message and "[0, 32000)" in err.message
    ok = await wire.run(CallRequest(program_id="bad-input-prog", prompt_token_ids=[31_999]))
    assert isinstance(ok.terminal[0], CallFinal)


async def test_call_without_reply_subject_is_logged_and_dropped(
    stack: Stack, wire: WireRecorder
) -> None:
    await wire.nc.publish(stack.subjects.submit, json.dumps(GOOD).encode())  # no reply
    assert await _log_contains(stack, "frontend", "call without a reply subject dropped")
    good = await wire.run(CallRequest.model_validate(GOOD), wait_s=30)
    assert isinstance(good.terminal[0], CallFinal)


async def test_bad_program_requests(stack: Stack, wire: WireRecorder) -> None:
    nc = wire.nc
    for subject, payload, code in (
        (stack.subjects.program_open, b"nope", ErrorCode.invalid_json),
        (stack.subjects.program_open, b'{"program_id": 3}', ErrorCode.validation_error),
        (stack.subjects.program_close, b"{}", ErrorCode.validation_error),
        (
            stack.subjects.program_close,
            b'{"program_id": "never-opened"}',
            ErrorCode.validation_error,
        ),
        (stack.subjects.program_open, b'{"v": 9}', ErrorCode.unsupported_version),
        (stack.subjects.program_open, b"[" * 50_000, ErrorCode.validation_error),
        (
            stack.subjects.program_open,
            b'{"metadata": {"a": "\\u0000"}}',
            ErrorCode.validation_error,
        ),
        (
            stack.subjects.cancel,
            b'{"call_id": "x", "reason": "\\u0000"}',
            ErrorCode.validation_error,
        ),
        (stack.subjects.cancel, b'{"v": 2, "call_id": "x"}', ErrorCode.unsupported_version),
    ):
        reply = CALL_REPLY.validate_json((await nc.request(subject, payload, timeout=10)).data)
        assert isinstance(reply, CallError) and reply.code == code, (payload, reply)


@pytest.mark.parametrize("service", ["frontend", "scheduler", "engine"])
def test_services_refuse_an_unmigrated_database(
    service: str, make_database, nats_url: str, namespace: str
) -> None:
    url = make_database(migrated=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            f"autellix.services.{service}",
            "--nats-url",
            nats_url,
            "--database-url",
            url,
            "--namespace",
            f"{namespace}_unmigrated",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc
    assert "has no Autellix schema" in proc.stderr
    assert "autellix db upgrade" in proc.stderr
    assert '"event": "database not migrated"' in proc.stdout
