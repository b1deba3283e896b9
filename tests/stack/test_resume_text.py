"""A call whose final never reached its caller still answers with its text when resumed.

The final of this call is published to a reply subject nobody listens on (as one published
while NATS was down, or to an inbox that was not back yet). Its answer then comes from the
call's row (`CallResume`, docs/protocol.md "Resuming a call"): the tokens *and* the text the
engine made, which the engine stores with the finish (the frontend has no tokenizer). A
duplicate submit under the same client call id gets the same stored answer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable

import nats
import pytest
import pytest_asyncio
from polling import poll_until
from svc_stack import Stack, db_fetch

from autellix.wire.protocol import (
    CallRequest,
    CallResume,
    CallResumeReply,
    ProgramOpen,
    SamplingParams,
    encode,
)

ENGINE = "rtext-e1"


@pytest_asyncio.fixture(scope="module")
async def stack(new_stack: Callable[[], Stack]) -> AsyncIterator[Stack]:
    s = new_stack()
    s.start("frontend", "frontend")
    s.start("scheduler", "scheduler")
    s.start_engine(ENGINE)
    async with s.running():
        yield s


@pytest.mark.timeout(60)
async def test_a_resumed_final_carries_the_text_its_engine_made(stack: Stack) -> None:
    settings = stack.settings
    subjects = stack.subjects
    program_id = f"rtext-{uuid.uuid4().hex[:8]}"
    key = f"{program_id}-k1"
    nc = await nats.connect(settings.nats_url)
    try:
        await nc.request(subjects.program_open, encode(ProgramOpen(program_id=program_id)), 10)
        request = CallRequest(
            program_id=program_id,
            prompt="tell me something",
            client_call_id=key,
            stream=True,
            sampling=SamplingParams(max_tokens=12),
        )
        # the replies go to an inbox nobody subscribes to: the final is lost on the way
        await nc.publish(subjects.submit, encode(request), reply=nc.new_inbox())

        async def finished() -> bool:
            rows = await db_fetch(
                settings.database_url,
                "SELECT status FROM calls WHERE program_id = $1 AND client_call_id = $2",
                program_id,
                key,
            )
            return bool(rows) and rows[0]["status"] == "finished"

        await poll_until(finished, within_s=30, what="the call to finish")
        resume = CallResume(program_id=program_id, client_call_id=key, offset=0)
        msg = await nc.request(subjects.resume, encode(resume), 10)
    finally:
        await nc.close()
    reply = CallResumeReply.model_validate(json.loads(msg.data))
    assert reply.status == "finished" and reply.final is not None, reply
    (row,) = await db_fetch(
        settings.database_url,
        "SELECT output_token_ids, output_text FROM calls WHERE id = $1",
        reply.call_id,
    )
    assert reply.token_ids == list(row["output_token_ids"]) and len(reply.token_ids) == 12
    assert reply.final.text, "the resumed final has no text"
    assert reply.final.text == row["output_text"]
