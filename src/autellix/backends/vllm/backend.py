"""`VllmBackend`: the `Backend` interface on vLLM's `AsyncLLM` (V1), one engine per instance.

This module ties the parts together: engine construction (`engine`), request checks and sampling
parameters (`request_params`), error classification (`errors`), the stat logger (`stats`) and the
orphan watchdog (`watchdog`); the package docstring says why the backend is shaped as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from autellix.backends.base import BackendError, BackendStats, GenerationRequest, TokenChunk
from autellix.backends.vllm.config import VllmBackendConfig
from autellix.backends.vllm.engine import (
    VllmNames,
    construct_engine,
    engine_args,
    ipc_dir,
    load_vllm,
    renice_children,
)
from autellix.backends.vllm.errors import stream_error
from autellix.backends.vllm.logprobs import convert as convert_logprobs
from autellix.backends.vllm.request_params import check_request, sampling_params
from autellix.backends.vllm.stats import StatsRecorder
from autellix.backends.vllm.watchdog import start_watchdog

__all__ = ["VllmBackend"]


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
        self._stats = StatsRecorder()
        self._stats.max_seqs = config.max_num_seqs
        self._inflight = 0
        self._died = False
        self._ipc_dir: str | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._vllm: VllmNames | None = None  # imported when the engine starts

    # ------------------------------------------------------------------ lifecycle

    def engine_args(self) -> dict[str, Any]:
        """The `AsyncEngineArgs` keywords this config maps to (model dirs already resolved)."""
        return engine_args(self.config)

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
        self._ipc_dir = ipc_dir()
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
            renice_children(self.config.nice)
        self._watchdog = start_watchdog()

    def _construct(self, args: dict[str, Any]) -> None:
        self._vllm = load_vllm()
        self._engine = construct_engine(args, self._ipc_dir, self._stats.factory())

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
                engine.output_processor.propagate_error(self._vllm.engine_dead_error())
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

    def _token_text(self, token_id: int) -> str:
        """One token's text, as logprobs show it (special tokens included: they were sampled);
        without a tokenizer the `<|id|>` placeholder the HTTP API shows for such text."""
        if self._tokenizer is None:
            return f"<|{token_id}|>"
        return str(self._tokenizer.decode([token_id], skip_special_tokens=False))

    def apply_chat_template(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """Token ids for chat messages (and OpenAI tool definitions) using the model's own chat
        template: Hugging Face templates take `tools` and render tool calls and tool turns in
        the form the model was trained on, which no generic rendering could know."""
        if self._tokenizer is None:
            raise BackendError(
                "no_tokenizer", f"model {self.model!r} is served without a tokenizer"
            )
        try:
            ids = self._tokenizer.apply_chat_template(
                messages, tools=tools or None, tokenize=True, add_generation_prompt=True
            )
        except Exception as exc:  # no template, bad roles, ...
            raise BackendError("validation_error", f"chat template failed: {exc}") from exc
        if isinstance(ids, Mapping):  # some tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)

    # ------------------------------------------------------------------ generation

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        """Stream new token ids. Closing or cancelling the iterator aborts the request in vLLM.

        Use `contextlib.aclosing` (or cancel the consuming task): an async generator that is
        merely dropped is only closed when garbage-collected.
        """
        check_request(request, self._engine, self.vocab_size, self.max_model_len, self.model)
        if request.structured is not None and self._tokenizer is None:
            raise BackendError(
                "unsupported_on_backend",
                f"structured output needs a tokenizer (the grammar is over token strings); "
                f"vllm model {self.model!r} is served without one",
            )
        if request.max_tokens == 0:
            yield TokenChunk([], finish_reason="length")
            return
        v = self._vllm
        assert v is not None  # set with the engine, which check_request found running
        params = sampling_params(request, v)
        priority = request.priority if self.config.scheduling_policy == "priority" else 0
        stream = self._engine.generate(
            {"prompt_token_ids": list(request.prompt_token_ids)},
            params,
            request.request_id,
            priority=priority,
        )
        self._inflight += 1
        top = request.logprobs
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
                    logprobs=None
                    if top is None
                    else convert_logprobs(
                        completion.token_ids, completion.logprobs, top, self._token_text
                    ),
                )
                if out.finished:
                    # vLLM's generator ends by itself after the finished output; holding the last
                    # chunk until then avoids a spurious abort when the consumer closes us.
                    final = chunk
                    continue
                yield chunk
        except Exception as exc:
            error = stream_error(exc, v)
            if error is None:
                raise
            if isinstance(exc, v.engine_dead_error):
                self._died = True
            raise error from exc
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
