"""NATS and JetStream helpers shared by the services: connect, streams, publish, pull-consume.

Why a pull loop of our own (`PullConsumer`) instead of `PullSubscription.fetch`: nats-py's
`fetch(batch=N)` with a lingering request waits for all N messages or the whole timeout once the
first one arrived, which adds up to the timeout to every call on a quiet system, while
`fetch(1)` costs a round trip per message. `PullConsumer` keeps one pull request of `batch`
messages outstanding and yields each message the moment it arrives (what the newer NATS clients
call `consume`), so latency is one hop and throughput is batched.

Replicas: `stream_configs` takes the replica count (`AUTELLIX_JS_REPLICAS`, R3 on a three-server
cluster). `ensure_streams` never lowers what an operator set by hand when the setting is absent,
and consumers inherit their stream's replicas, so one setting covers everything Autellix creates.

Message ids (`Nats-Msg-Id`) make every publish idempotent inside the stream's duplicate window:
see `schedule_msg_id` and `dispatch_msg_id`, the only two id schemes in the system.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as jsapi
from nats.js.errors import BadRequestError, NotFoundError

from autellix.runtime.nats_auth import connect_options
from autellix.runtime.nats_connect import connect_refusing_bad_credentials
from autellix.runtime.settings import js_replicas, nats_servers
from autellix.runtime.telemetry import get_logger
from autellix.transport.aio import get_within
from autellix.wire.protocol import Subjects

DUPLICATE_WINDOW_S = 120.0
#: every durable consumer's max_deliver: no message is redelivered forever. The receiver acts
#: at the last delivery (`delivered(msg) >= MAX_DELIVER`): the scheduler fails the call with a
#: typed error; an engine needs nothing (a Dispatch it never took is handed back by the orphan
#: sweep). Large enough for the scheduler's no-engine retries (at most 2 s apart, for
#: `no_engine_timeout_s`, default 60 s).
MAX_DELIVER = 100


def delivered(msg: Any) -> int:
    """How many times JetStream delivered `msg` (1 the first time; direct offers count 1)."""
    try:
        return max(1, int(msg.metadata.num_delivered))
    except Exception:
        return 1


def schedule_msg_id(call_id: str, attempt: int) -> str:
    """Id of the ScheduleCall that asks for dispatch number `attempt` of a call.

    Attempt 0 (the frontend's publish) uses the bare call id, as the protocol documents.
    """
    return call_id if attempt == 0 else f"{call_id}:sched:{attempt}"


def dispatch_msg_id(call_id: str, attempt: int) -> str:
    return f"{call_id}:{attempt}"


async def connect(url: str, name: str, log: Any = None, **kwargs: Any) -> NATS:
    """Connect, retrying forever (also the first time: a service started before NATS waits for
    it) unless the server refuses the credentials (`NatsConnectError` at once: retrying cannot
    fix them), with connection trouble logged to `log` (structlog) instead of silently retried.

    `url` may list several servers of a cluster, comma-separated: the client connects to one and,
    when it goes away, reconnects to another (nats-py also learns the servers the cluster
    announces). Subscriptions are re-made on the new server; JetStream state is the cluster's.
    Credentials: the user file named by ``AUTELLIX_NATS_USER_FILE`` (`runtime.nats_auth`)."""
    failures = 0

    async def on_error(exc: Exception) -> None:
        nonlocal failures
        failures += 1
        if log is not None and (failures <= 3 or failures % 20 == 0):
            log.warning("NATS connection problem; retrying", url=url, error=repr(exc), n=failures)

    async def on_disconnect() -> None:
        if log is not None:
            log.warning("NATS disconnected; reconnecting", url=url)

    async def on_reconnect() -> None:
        if log is not None:
            log.info("NATS reconnected", url=url)

    opts: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        "allow_reconnect": True,
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
    }
    opts.update(connect_options())  # this service's NATS user, where the server wants one
    opts.update(kwargs)
    error_cb = opts.pop("error_cb")
    return await connect_refusing_bad_credentials(
        nats.connect, nats_servers(url), error_cb=error_cb, **opts
    )


def _work_queue(name: str, subject: str, replicas: int) -> jsapi.StreamConfig:
    """A work-queue stream on the file store, kept a week at most, deduplicated on message id
    (calls and dispatches: each message lives until one consumer acks it)."""
    return jsapi.StreamConfig(
        name=name,
        subjects=[subject],
        retention=jsapi.RetentionPolicy.WORK_QUEUE,
        storage=jsapi.StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=7 * 24 * 3600.0,
    )


def stream_configs(subjects: Subjects, replicas: int = 1) -> list[jsapi.StreamConfig]:
    """The three streams. Work-queue retention: a message lives until one consumer acks it.
    `replicas`: how many servers keep each stream (a quorum of them acknowledges a publish)."""
    return [
        _work_queue(subjects.calls_stream, subjects.sched_calls, replicas),
        _work_queue(subjects.dispatch_stream, subjects.dispatch_wildcard(), replicas),
        # progress reports: bounded history, consumers (issue 5) read what they need
        jsapi.StreamConfig(
            name=subjects.reports_stream,
            subjects=[subjects.reports],
            retention=jsapi.RetentionPolicy.LIMITS,
            storage=jsapi.StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=10.0,
            max_age=600.0,
            max_msgs=1_000_000,
        ),
    ]


async def ensure_streams(
    js: JetStreamContext, subjects: Subjects, replicas: int | None = None
) -> None:
    """Create (or update to this code's config) every stream; safe when services race.

    `replicas` None means `AUTELLIX_JS_REPLICAS`, and where that is unset too: create with one
    replica, keep an existing stream's count. Why keep it: an operator who raised a stream to R3
    by hand must not see the next service start quietly bring it back to R1."""
    wanted = replicas if replicas is not None else js_replicas()
    for cfg in stream_configs(subjects, wanted or 1):
        try:
            current = (await js.stream_info(cfg.name or "")).config
        except NotFoundError:
            current = None
        if current is None:
            try:
                await js.add_stream(cfg)
                continue
            except BadRequestError as exc:
                if exc.err_code != 10058:  # stream name already in use with a different config
                    raise
                current = (await js.stream_info(cfg.name or "")).config
        if wanted is None:
            cfg.num_replicas = current.num_replicas or 1
        if _differs(current, cfg):
            await js.update_stream(cfg)


def _differs(current: jsapi.StreamConfig, wanted: jsapi.StreamConfig) -> bool:
    """Whether an existing stream's config differs from `wanted` in a field this code sets (an
    update of an equal config is a needless round of Raft proposals on a cluster)."""
    for key, value in wanted.as_dict().items():
        if key != "name" and current.as_dict().get(key) != value:
            return True
    return False


async def ensure_consumer(
    js: JetStreamContext,
    stream: str,
    durable: str,
    filter_subject: str,
    *,
    ack_wait: float = 30.0,
    max_ack_pending: int = 20_000,
    inactive_threshold: float | None = None,
) -> None:
    cfg = jsapi.ConsumerConfig(
        durable_name=durable,
        filter_subject=filter_subject,
        ack_policy=jsapi.AckPolicy.EXPLICIT,
        deliver_policy=jsapi.DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=MAX_DELIVER,
        max_ack_pending=max_ack_pending,
        max_waiting=512,
        inactive_threshold=inactive_threshold,
    )
    try:
        await js.add_consumer(stream, cfg)
    except BadRequestError as exc:
        # 10148: consumer exists with another config. Keep it: updating a shared durable under
        # running replicas would be a surprise; a new deployment can delete it explicitly.
        if exc.err_code != 10148:
            raise


async def drop_dead_deliveries(js: JetStreamContext, stream: str, durable: str) -> bool:
    """Delete a restarted process's durable consumer when a dead predecessor still has messages
    out on it (delivered, never acked) or pull requests waiting; True when it did.

    Why: messages the dead process had received but not acked come back only after `ack_wait`
    (30 s), and so do messages delivered into its last pull request, which the server may still
    hold after the death (seen under `autellix chaos`: 3 unacked deliveries and 1 waiting
    request when a SIGKILLed engine was back 1 s later). For an engine that was a Dispatch
    published in the second after its restart, answered 30 s late. In a work-queue
    stream a message lives until acked, whatever its consumer, so the consumer made again with
    the same config hands every one of them to the new process at once (an engine refuses
    those it no longer owns). Only for a consumer one process owns (an engine's own queue)."""
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        return False
    if not (info.num_ack_pending or info.num_waiting):
        return False
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(stream, durable)
    return True


async def publish_js(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    msg_id: str,
    headers: dict[str, str] | None = None,
    *,
    attempts: int = 3,
    ack_wait_s: float = 2.0,
) -> jsapi.PubAck:
    """JetStream publish with a message id (dedupe) and a few retries on timeouts."""
    hdrs = dict(headers or {})
    hdrs["Nats-Msg-Id"] = msg_id
    delay = 0.05
    for i in range(attempts):
        try:
            return await js.publish(subject, payload, timeout=ack_wait_s, headers=hdrs)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError):
            if i == attempts - 1:
                raise
            await asyncio.sleep(delay)
            delay *= 4
    raise AssertionError("unreachable")


def status_of(msg: Msg) -> str | None:
    """The NATS status code of a control message (e.g. '503' no responders), else None."""
    if msg.headers:
        return msg.headers.get("Status")
    return None


class PullConsumer:
    """Yield messages of a durable pull consumer as they arrive, with one batch request in flight.

    Flow: publish a pull request `{"batch": B, "expires": E}` to the consumer's next-message
    API with our private inbox as reply; the server delivers up to B messages there as they
    become available. When B have arrived, or the server ends the request (408 expired, 409),
    or nothing at all was heard for E + 2 s (lost request after a reconnect), send the next one.
    """

    def __init__(
        self,
        nc: NATS,
        stream: str,
        durable: str,
        *,
        batch: int = 256,
        expires: float = 5.0,
    ) -> None:
        self.nc = nc
        self.stream = stream
        self.durable = durable
        self.batch = batch
        self.expires = expires
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub: Any = None
        self._inbox = nc.new_inbox()
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._remaining = 0
        self._last_heard = 0.0
        self._closed = False
        self._pump_task: asyncio.Task[None] | None = None
        self._want = asyncio.Event()

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_msg)
        self._pump_task = asyncio.create_task(self._pump(), name=f"pull-{self.durable}")

    async def _on_msg(self, msg: Msg) -> None:
        self._last_heard = time.monotonic()
        status = status_of(msg)
        if status is None:
            self._remaining -= 1
            self._queue.put_nowait(msg)
            if self._remaining <= 0:
                self._want.set()
            return
        if status == "100":  # idle heartbeat / flow control
            return
        # 404 no messages, 408 request expired, 409 (max waiting, consumer deleted, ...)
        self._remaining = 0
        self._want.set()

    async def _request(self) -> None:
        req = {"batch": self.batch, "expires": int(self.expires * 1e9)}
        self._remaining = self.batch
        self._last_heard = time.monotonic()
        await self.nc.publish(self._api, json.dumps(req).encode(), reply=self._inbox)

    async def _pump(self) -> None:
        backoff = 0.1
        while not self._closed:
            try:
                if self._remaining <= 0:
                    self._want.clear()
                    await self._request()
                    backoff = 0.1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._want.wait(), timeout=self.expires + 2.0)
                if time.monotonic() - self._last_heard > self.expires + 2.0:
                    self._remaining = 0  # request lost (reconnect); ask again
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._remaining = 0

    async def next(self, wait_s: float | None = None) -> Msg | None:
        """The next message, or None after `wait_s` seconds."""
        try:
            return await get_within(self._queue, wait_s)
        except TimeoutError:
            return None

    async def messages(self) -> AsyncIterator[Msg]:
        while not self._closed:
            msg = await self.next(wait_s=0.5)
            if msg is not None:
                yield msg

    def pending(self) -> int:
        return self._queue.qsize()

    def inject(self, msg: Any) -> None:
        """Queue a message that came another way (a direct offer, `transport.direct`) behind
        the ones already received, to be handled by the same code."""
        self._queue.put_nowait(msg)

    async def stop(self) -> list[Msg]:
        """Stop pulling; return messages received but not handed out (caller naks them)."""
        self._closed = True
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        left: list[Msg] = []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        return left


class _Requeued(Protocol):
    id: str
    program_id: str
    reply_to: str
    attempts: int


async def publish_schedule(
    js: JetStreamContext, subjects: Subjects, calls: Iterable[_Requeued], *, reason: str
) -> int:
    """Publish a ScheduleCall for calls that are `queued` in Postgres (re-dispatch after an engine
    was lost, reconciliation). Idempotent: the message id names the dispatch attempt wanted.
    Returns how many were published; failures are left for the reconciler."""
    from autellix.wire.protocol import ScheduleCall, encode

    sent = 0
    for c in calls:
        msg = ScheduleCall(
            call_id=c.id,
            program_id=c.program_id,
            reply_to=c.reply_to,
            attempt=c.attempts,
            reason=reason,
        )
        try:
            await publish_js(
                js, subjects.sched_calls, encode(msg), schedule_msg_id(c.id, c.attempts)
            )
            sent += 1
        except Exception as exc:  # the reconciler republishes it; say why it had to
            get_logger().warning(
                "ScheduleCall not published", call_id=c.id, reason=reason, error=repr(exc)
            )
    return sent
