"""Gateway benchmark: what the Agenix AI gateway adds in front of a model backend, side by side with LiteLLM's proxy
in the same run, plus time to first token and tokens/s through the gateway to the real Gemma backend.

`run_gateway_benchmark(json_path=...)` does, on this machine:

1. starts the constant-time stub backend (``agenix_bench.stub_backend``: raw asyncio HTTP/1.1 on uvloop,
   a fixed ``chat.completion`` for every request), the Agenix gateway (``agenix gateway``, one process, its
   config a temp copy of ``config/`` with a model ``stub`` pointing at the stub; API-key auth, per-key and
   per-team rate limits and budgets, routing, guardrails and the JSONL request log all on, as shipped) and
   LiteLLM's proxy (``litellm --num_workers 1`` from its own venv, ``agenix_bench/litellm/config.yaml``: master key,
   an in-memory rpm/tpm limit on the deployment, a JSONL request-log callback), each as its own process;
2. ADDED LATENCY, one request in flight: a lean raw-socket client on one persistent keep-alive connection per
   target sends the same chat completion to the stub directly, through Agenix and through LiteLLM, in
   interleaved blocks (``block`` requests to each target in turn, the order rotating every round) so that noise
   hits all three alike; ``requests`` timed per target after ``warmup``. ``p50_added_ms`` = p50 via the
   gateway - p50 of the stub direct (a difference of medians, not a median of paired differences; likewise
   p99 and mean);
3. MAX THROUGHPUT: Debian's ``wrk`` (``-t1``, a Lua script POSTing the same JSON body with the target's
   Authorization header) at each of ``connections`` for ``duration_s`` after a ``warmup_s`` run that is not
   counted, the targets interleaved per level. ``max_rps`` = the best rate of good (2xx/3xx) answers over the
   levels; non-2xx answers and socket errors are counted per level and in total, and print_table flags them;
4. GEMMA: the packaged Gemma 3 270M on llama.cpp's server (``serving.model_server.LlamaCppServer``), streamed
   through the gateway as model ``gemma-3-270m``: time to first token and decode tokens/s (and the same figures
   direct from the llama.cpp server, as a reference with its own prompt). Skipped, with the reason in the JSON,
   when the model server cannot start.

CPU layout (2 cores here; ``pin=True``): the load side (wrk, the latency client, the stub) shares the first CPU,
the server under test gets the second CPU to itself. Every gateway is one process, so it can use one core; pinning
gives each the same whole core and keeps it from stealing the load generator's. The stub's own figures are then
those of the load side alone (wrk + stub on one core): the ceiling of what this harness can measure.

Needs ``wrk`` (``apt-get install -y wrk``). LiteLLM is installed on first use into ``<repo>/.venv-litellm`` from
``agenix_bench/litellm/requirements.txt`` + ``constraints.txt`` (``setup_litellm=True``; its pins conflict with ours,
so it never goes into the project's venv).

No Dagster import; run as ``agenix bench gateway --json PATH`` (agenix_bench/cli.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agenix_assets.processes import wait_http

from .tables import fmt

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "config"
# Package data: LiteLLM's pins and proxy configs travel with the benchmark, also in an installed package.
LITELLM_DIR = Path(__file__).resolve().parent / "litellm"
DEFAULT_LITELLM_VENV = REPO / ".venv-litellm"
STUB_MODEL = "stub"
GEMMA_MODEL = "gemma-3-270m"
BENCH_TEAM = "bench"
# Limits that are on (enforced, counted) but far above what one core can push in a benchmark minute.
BENCH_RPM = 100_000_000
BENCH_TPM = 10_000_000_000
BENCH_BUDGET = 1_000_000.0
TARGET_P50_ADDED_MS = 1.0
TARGET_THROUGHPUT_RATIO = 10.0
ANCHOR_LITELLM = {"p50_added_ms": 12.0, "max_rps": 100.0}
DEFAULT_CONNECTIONS = (8, 32, 64)
PROMPT = "Reply with one short sentence about keep-alive connections."
GEMMA_PROMPT = "Explain in a few sentences why regular maintenance of an industrial pump matters."
TARGET_NAMES = ("stub", "agenix", "litellm")

Log = Callable[[str], None] | None


def _log_stderr(message: str) -> None:
    print(f"[bench gateway {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float | int]:
    return {
        "n": len(samples_ms),
        "p50_ms": round(percentile(samples_ms, 50), 4),
        "p90_ms": round(percentile(samples_ms, 90), 4),
        "p99_ms": round(percentile(samples_ms, 99), 4),
        "mean_ms": round(statistics.fmean(samples_ms), 4) if samples_ms else float("nan"),
        "min_ms": round(min(samples_ms), 4) if samples_ms else float("nan"),
        "max_ms": round(max(samples_ms), 4) if samples_ms else float("nan"),
    }


# --------------------------------------------------------------------------------------------------------------
# a lean HTTP/1.1 keep-alive client (the same for every target, so its own cost cancels out in the differences)
# --------------------------------------------------------------------------------------------------------------


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class KeepAliveClient:
    """One persistent connection; ``roundtrip(request)`` sends prebuilt bytes and reads one whole response
    (Content-Length or chunked). Reconnects when the server closes the connection."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.addr = (host, port)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.connects = 0

    def connect(self) -> None:
        self.close()
        sock = socket.create_connection(self.addr, timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = bytearray()
        self.connects += 1

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None

    def _fill(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(262_144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _read_line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:i])
        del self.buf[: i + 2]
        return line

    def roundtrip(self, request: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        self.sock.sendall(request)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = bytes(self.buf[:end])
        del self.buf[: end + 4]
        status = int(head[9:12])
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            parts = []
            while True:
                size = int(self._read_line().split(b";")[0], 16)
                if size == 0:
                    while self._read_line():  # trailers, then the empty line
                        pass
                    break
                parts.append(self._read_exact(size))
                self._read_line()
            body = b"".join(parts)
        else:
            m = re.search(rb"content-length:\s*(\d+)", lower)
            body = self._read_exact(int(m.group(1))) if m else b""
        if b"connection: close" in lower:
            self.close()
        return status, body

    def __enter__(self) -> KeepAliveClient:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Target:
    """One thing to measure: where it listens and what request to send it."""

    name: str
    host: str
    port: int
    headers: dict[str, str] = field(default_factory=dict)
    path: str = "/v1/chat/completions"
    proc: subprocess.Popen | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"


def chat_body(model: str = STUB_MODEL, max_tokens: int = 32, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def check_answer(target: Target, body: bytes | None = None) -> dict[str, Any]:
    """One request; raises unless the answer is a 200 chat.completion carrying the stub's sentence."""
    from agenix_bench.stub_backend import ANSWER

    body = body or chat_body()
    with KeepAliveClient(target.host, target.port) as client:
        status, payload = client.roundtrip(build_request(target.host, target.port, target.path, body, target.headers))
    if status != 200 or ANSWER.encode() not in payload:
        raise RuntimeError(f"{target.name} did not answer through the stub: HTTP {status}: {payload[:500]!r}")
    return json.loads(payload)


def measure_latency(
    targets: Sequence[Target], requests: int, warmup: int, block: int, log: Log = None
) -> dict[str, dict[str, Any]]:
    """Sequential requests, one in flight, on one keep-alive connection per target; targets interleaved in blocks
    of ``block`` (the order rotates each round). Returns per target the latency summary and error counts."""
    from agenix_bench.stub_backend import ANSWER

    answer = ANSWER.encode()
    body = chat_body()
    clients = {t.name: KeepAliveClient(t.host, t.port) for t in targets}
    reqs = {t.name: build_request(t.host, t.port, t.path, body, t.headers) for t in targets}
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    errors: dict[str, int] = {t.name: 0 for t in targets}
    names = [t.name for t in targets]
    perf = time.perf_counter_ns

    def run(n_per_target: int, record: bool) -> None:
        rounds = max(1, -(-n_per_target // block))
        done = dict.fromkeys(names, 0)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                client, req, out = clients[name], reqs[name], samples[name]
                for _ in range(min(block, n_per_target - done[name])):
                    t0 = perf()
                    try:
                        status, payload = client.roundtrip(req)
                    except OSError:
                        client.close()
                        errors[name] += 1
                        continue
                    t1 = perf()
                    if status != 200 or answer not in payload:
                        errors[name] += 1
                    elif record:
                        out.append((t1 - t0) / 1e6)
                    done[name] += 1
                if errors[name] > 20 + n_per_target // 10:
                    raise RuntimeError(f"{name}: {errors[name]} failed requests while measuring latency; giving up")

    try:
        if warmup:
            run(warmup, record=False)
            for name in names:
                errors[name] = 0
        t0 = time.perf_counter()
        run(requests, record=True)
        seconds = time.perf_counter() - t0
    finally:
        for c in clients.values():
            c.close()
    if log:
        log(f"latency: {requests} requests x {len(names)} targets in {seconds:.1f} s")
    return {
        name: {**latency_summary(samples[name]), "errors": errors[name], "connections": clients[name].connects}
        for name in names
    }


# --------------------------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------------------------


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: `apt-get install -y wrk` (Debian's package) is needed for throughput")
    return path


def wrk_version() -> str:
    try:
        out = subprocess.run([wrk_path(), "--version"], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "unknown"


_WRK_LINE = re.compile(r"^AGENIX_WRK (.*)$", re.MULTILINE)
_WRK_FIELDS = (
    "requests",
    "duration_us",
    "bytes",
    "connect",
    "read",
    "write",
    "status",
    "timeout",
    "p50_us",
    "p90_us",
    "p99_us",
    "mean_us",
    "max_us",
)


def wrk_script(body: bytes, headers: dict[str, str]) -> str:
    """A wrk Lua script: POST ``body`` with ``headers``; ``done`` prints one machine-readable summary line."""

    def long_string(text: str) -> str:
        level = 1
        while f"]{'=' * level}]" in text:
            level += 1
        return f"[{'=' * level}[{text}]{'=' * level}]"

    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {long_string(body.decode())}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f"wrk.headers[ {long_string(k)} ] = {long_string(v)}" for k, v in headers.items()]
    lines.append(
        "done = function(summary, latency, requests)\n"
        "  local e = summary.errors\n"
        '  io.write(string.format("AGENIX_WRK %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.1f %.0f\\n",\n'
        "    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,\n"
        "    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))\n"
        "end"
    )
    return "\n".join(lines) + "\n"


def run_wrk(
    url: str,
    script: Path,
    connections: int,
    duration_s: float,
    *,
    threads: int = 1,
    cpus: set[int] | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """One wrk run; the rates are per second of wrk's own measured duration."""
    cmd = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=duration_s + timeout_s + 60,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    m = _WRK_LINE.search(out.stdout)
    if out.returncode != 0 or m is None or "lua" in out.stderr.lower():  # wrk exits 0 on a broken script
        raise RuntimeError(f"wrk failed (exit {out.returncode}): {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
    values = dict(zip(_WRK_FIELDS, (float(x) for x in m.group(1).split()), strict=True))
    seconds = values["duration_us"] / 1e6
    requests = int(values["requests"])
    non_2xx = int(values["status"])  # wrk counts answers with status > 399
    socket_errors = {k: int(values[k]) for k in ("connect", "read", "write", "timeout")}
    return {
        "connections": connections,
        "threads": threads,
        "seconds": round(seconds, 3),
        "requests": requests,
        "rps": round(requests / seconds, 1) if seconds else 0.0,
        "ok_rps": round((requests - non_2xx) / seconds, 1) if seconds else 0.0,
        "non_2xx": non_2xx,
        "socket_errors": socket_errors,
        "errors": non_2xx + sum(socket_errors.values()),
        "latency_ms": {
            "p50": round(values["p50_us"] / 1000, 3),
            "p90": round(values["p90_us"] / 1000, 3),
            "p99": round(values["p99_us"] / 1000, 3),
            "mean": round(values["mean_us"] / 1000, 3),
            "max": round(values["max_us"] / 1000, 3),
        },
    }


def measure_throughput(
    targets: Sequence[Target],
    workdir: Path,
    connections: Sequence[int],
    duration_s: float,
    warmup_s: float,
    *,
    threads: int = 1,
    cpus: set[int] | None = None,
    log: Log = None,
) -> dict[str, list[dict[str, Any]]]:
    """wrk against every target at every concurrency level; targets interleaved per level, order rotating."""
    body = chat_body()
    scripts = {}
    for t in targets:
        scripts[t.name] = workdir / f"wrk-{t.name}.lua"
        scripts[t.name].write_text(wrk_script(body, t.headers))
    out: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for i, c in enumerate(connections):
        order = list(targets[i % len(targets) :]) + list(targets[: i % len(targets)])
        for t in order:
            if warmup_s > 0:
                run_wrk(t.url, scripts[t.name], c, warmup_s, threads=threads, cpus=cpus)
            res = run_wrk(t.url, scripts[t.name], c, duration_s, threads=threads, cpus=cpus)
            out[t.name].append(res)
            if log:
                errs = (
                    f", {res['errors']} ERRORS {res['socket_errors']} non-2xx {res['non_2xx']}" if res["errors"] else ""
                )
                log(
                    f"throughput {t.name:<8} -c{c:<4} {res['ok_rps']:>10,.0f} req/s  p50 {res['latency_ms']['p50']} ms{errs}"
                )
    return out


def best_throughput(levels: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """max_rps: the best rate of good answers over the levels; errors: every error at every level."""
    if not levels:
        return {"max_rps": 0.0, "max_rps_connections": None, "errors": 0}
    best = max(levels, key=lambda r: r["ok_rps"])
    return {
        "max_rps": best["ok_rps"],
        "max_rps_connections": best["connections"],
        "errors": sum(r["errors"] for r in levels),
        "non_2xx": sum(r["non_2xx"] for r in levels),
    }


# --------------------------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cpu_layout(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(load-side CPUs, server CPUs): the first usable CPU and the second, or (None, None) without pinning."""
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


def spawn(
    cmd: Sequence[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """A child in its own process group (so ``stop`` reaches everything it starts), pinned to ``cpus``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fh = log_path.open("ab")
    try:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,  # noqa: PLW1509
        )
    finally:
        fh.close()


def stop(proc: subprocess.Popen | None, grace_s: float = 8.0) -> int | None:
    """SIGTERM the process group, SIGKILL it after ``grace_s``."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    return proc.returncode


def start_stub(workdir: Path, cpus: set[int] | None) -> Target:
    port = free_port()
    log_path = workdir / "logs" / "stub.log"
    proc = spawn(
        [sys.executable, "-m", "agenix_bench.stub_backend", "--port", str(port)],
        log_path,
        env=_child_env(),
        cpus=cpus,
        cwd=REPO,
    )
    target = Target("stub", "127.0.0.1", port, proc=proc)
    try:
        target.info["startup_seconds"] = round(
            wait_http(f"http://127.0.0.1:{port}/v1/models", proc, 30, log_path, "the stub backend"), 2
        )
    except BaseException:
        stop(proc)
        raise
    return target


def _child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env["PYTHONUNBUFFERED"] = "1"
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)  # loopback only
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------------------------------
# Agenix gateway
# --------------------------------------------------------------------------------------------------------------


def agenix_command() -> list[str]:
    exe = Path(sys.executable).with_name("agenix")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("agenix")
    if found:
        return [found]
    return [sys.executable, "-m", "agenix_assets.cli"]


def prepare_agenix_config(workdir: Path, stub_port: int) -> Path:
    """A copy of ``config/`` whose registry has the model ``stub`` (the stub backend, chat, priced so budgets count)
    before the shipped models, whose team ``bench`` has limits and a budget far above the benchmark's load, and whose
    deployment manifest serves no RAG use case (direct model calls only: no index needed to be ready)."""
    import yaml

    from serving.config import GatewayConfig

    cfg = workdir / "agenix-config"
    if cfg.exists():
        shutil.rmtree(cfg)
    shutil.copytree(CONFIG_DIR, cfg)
    models_path = cfg / "gateway" / "models.yaml"
    registry = yaml.safe_load(models_path.read_text())
    stub = {
        "name": STUB_MODEL,
        "kind": "openai",
        "description": "Constant-time OpenAI-compatible stub (agenix_bench.stub_backend); benchmark only.",
        "base_url": f"http://127.0.0.1:{stub_port}/v1",
        "size": "small",
        "quality_tier": 1,
        "prompt_style": "chat",
        "price_per_1k_input": 0.0001,
        "price_per_1k_output": 0.0002,
        "context_length": 4096,
        "timeout_s": 30,
        "connect_timeout_s": 2,
    }
    registry["models"] = [stub, *[m for m in registry["models"] if m.get("name") != STUB_MODEL]]
    models_path.write_text(
        "# Written by agenix bench gateway: the shipped registry plus the stub backend.\n"
        + yaml.safe_dump(registry, sort_keys=False)
    )
    gateway_path = cfg / "gateway" / "gateway.yaml"
    settings = yaml.safe_load(gateway_path.read_text())
    settings.setdefault("teams", {})[BENCH_TEAM] = {"rpm": BENCH_RPM, "tpm": BENCH_TPM, "monthly_budget": BENCH_BUDGET}
    gateway_path.write_text(
        "# Written by agenix bench gateway: shipped settings plus the team 'bench'.\n"
        + yaml.safe_dump(settings, sort_keys=False)
    )
    loaded = GatewayConfig.load(cfg)  # fail here, with file and key, rather than in the child
    manifest_path = loaded.manifest_path
    manifest = yaml.safe_load(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest = {"environment": manifest.get("environment", loaded.settings.environment), "use_cases": {}}
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(
        "# Written by agenix bench gateway: direct model calls only.\n" + yaml.safe_dump(manifest, sort_keys=False)
    )
    return cfg


def create_agenix_key(home: Path) -> str:
    """A key for team ``bench`` limited to the stub and Gemma, with its own (high, nonzero) rpm and tpm."""
    try:
        from serving.auth import KeyStore
    except ImportError:
        KeyStore = None
    if KeyStore is not None:
        plaintext, _ = KeyStore(home / "gateway" / "keys.json").create(
            BENCH_TEAM, name="agenix bench gateway", models=(STUB_MODEL, GEMMA_MODEL), rpm=BENCH_RPM, tpm=BENCH_TPM
        )
        return plaintext
    out = subprocess.run(  # noqa: PLW1510 - the return code is checked below
        [
            *agenix_command(),
            "keys",
            "create",
            "--team",
            BENCH_TEAM,
            "--model",
            STUB_MODEL,
            "--model",
            GEMMA_MODEL,
            "--rpm",
            str(BENCH_RPM),
            "--tpm",
            str(BENCH_TPM),
            "--json",
            "--home",
            str(home),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_child_env(AGENIX_HOME=str(home)),
    )
    if out.returncode != 0:
        raise RuntimeError(f"agenix keys create failed: {out.stderr or out.stdout}")
    return json.loads(out.stdout)["key"]


def start_agenix(workdir: Path, stub: Target, cpus: set[int] | None, gemma_url: str | None, log: Log) -> Target:
    home = workdir / "agenix-home"
    cfg = prepare_agenix_config(workdir, stub.port)
    key = create_agenix_key(home)
    port = free_port()
    log_path = workdir / "logs" / "agenix-gateway.log"
    env = _child_env(AGENIX_HOME=str(home), AGENIX_CONFIG_DIR=str(cfg))
    if gemma_url:
        env["AGENIX_LLM_URL"] = gemma_url
    cmd = [*agenix_command(), "gateway", "--home", str(home), "--config-dir", str(cfg), "--port", str(port)]
    if log:
        log(f"starting the Agenix gateway: {' '.join(cmd)}")
    proc = spawn(cmd, log_path, env=env, cpus=cpus, cwd=REPO)
    target = Target("agenix", "127.0.0.1", port, headers={"Authorization": f"Bearer {key}"}, proc=proc)
    target.info.update(home=str(home), config_dir=str(cfg), log=str(log_path), command=cmd)
    try:
        target.info["startup_seconds"] = round(
            wait_http(f"http://127.0.0.1:{port}/readyz", proc, 300, log_path, "the Agenix gateway"), 2
        )
    except BaseException:
        stop(proc)
        raise
    return target


def count_jsonl_records(folder: Path, pattern: str = "*.jsonl*") -> int:
    n = 0
    for path in folder.rglob(pattern) if folder.exists() else ():
        if path.is_file() and not path.name.endswith((".gz", ".zst")):
            with path.open("rb") as fh:
                n += sum(1 for _ in fh)
    return n


# --------------------------------------------------------------------------------------------------------------
# LiteLLM proxy
# --------------------------------------------------------------------------------------------------------------


def litellm_pin() -> str:
    """The exact version in agenix_bench/litellm/requirements.txt."""
    for line in (LITELLM_DIR / "requirements.txt").read_text().splitlines():
        m = re.match(r"^\s*litellm(?:\[[^\]]*\])?==([^\s;#]+)", line)
        if m:
            return m.group(1)
    raise RuntimeError(f"no exact litellm pin in {LITELLM_DIR / 'requirements.txt'}")


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed_litellm(venv: Path) -> str | None:
    py = _venv_python(venv)
    if not py.exists():
        return None
    out = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_litellm_venv(venv: Path = DEFAULT_LITELLM_VENV, *, setup: bool = True, log: Log = _log_stderr) -> str:
    """LiteLLM's own venv with the pinned ``litellm[proxy]``; created with pip when missing or at another version
    (and ``setup``). Returns the installed version."""
    want = litellm_pin()
    have = installed_litellm(venv)
    if have == want:
        return have
    if not setup:
        raise RuntimeError(
            f"LiteLLM {want} is not installed in {venv} (found {have}); run with setup enabled "
            f"or: python3 -m venv {venv} && {venv}/bin/pip install -r {LITELLM_DIR}/requirements.txt "
            f"-c {LITELLM_DIR}/constraints.txt"
        )
    say = log or (lambda _m: None)
    commands = []
    if not _venv_python(venv).exists():
        base = getattr(sys, "_base_executable", None) or sys.executable
        commands.append([base, "-m", "venv", str(venv)])
    pip = [str(_venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    reqs = ["-r", str(LITELLM_DIR / "requirements.txt")]
    if (LITELLM_DIR / "constraints.txt").exists():
        reqs += ["-c", str(LITELLM_DIR / "constraints.txt")]
    commands.append(pip + reqs)
    for cmd in commands:
        say(f"LiteLLM setup (its own venv, not the project's): {' '.join(cmd)}")
        t0 = time.perf_counter()
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"LiteLLM setup failed: {' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        say(f"  done in {time.perf_counter() - t0:.0f} s")
    have = installed_litellm(venv)
    if have != want:
        raise RuntimeError(f"LiteLLM setup left version {have} in {venv}, expected {want}")
    return have


def litellm_env(workdir: Path, stub: Target, master_key: str) -> dict[str, str]:
    return _child_env(
        LITELLM_MASTER_KEY=master_key,
        AGENIX_BENCH_STUB_URL=f"http://127.0.0.1:{stub.port}/v1",
        AGENIX_BENCH_STUB_KEY="sk-stub-not-checked",
        AGENIX_BENCH_LITELLM_LOG=str(workdir / "litellm" / "requests.jsonl"),
        # no network at start: the cost map and the other remote JSONs come from the package
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS="True",
        LITELLM_LOCAL_BLOG_POSTS="True",
        LITELLM_LOCAL_AUTOROUTER_PRESETS="True",
        LITELLM_LOCAL_POLICY_TEMPLATES="True",
        LITELLM_TELEMETRY="False",
        LITELLM_DONT_SHOW_FEEDBACK_BOX="True",
        DISABLE_ADMIN_UI="True",
        NO_DOCS="True",
        TOKENIZERS_PARALLELISM="false",
    )


def start_litellm(
    workdir: Path, stub: Target, venv: Path, cpus: set[int] | None, log: Log, config: Path | None = None
) -> Target:
    """LiteLLM's proxy, one worker, from ``config`` (default ``agenix_bench/litellm/config.yaml``) copied beside
    ``request_log.py`` into ``<workdir>/litellm``."""
    folder = workdir / "litellm"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(config or LITELLM_DIR / "config.yaml", folder / "config.yaml")
    shutil.copy2(LITELLM_DIR / "request_log.py", folder / "request_log.py")
    master_key = "sk-" + secrets.token_urlsafe(36)
    port = free_port()
    log_path = workdir / "logs" / "litellm.log"
    cmd = [
        str(venv / "bin" / "litellm"),
        "--config",
        str(folder / "config.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    if log:
        log(f"starting LiteLLM: {' '.join(cmd)}")
    proc = spawn(cmd, log_path, env=litellm_env(workdir, stub, master_key), cpus=cpus, cwd=folder)
    target = Target("litellm", "127.0.0.1", port, headers={"Authorization": f"Bearer {master_key}"}, proc=proc)
    target.info.update(log=str(log_path), command=cmd, request_log=str(folder / "requests.jsonl"))
    try:
        target.info["startup_seconds"] = round(
            wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, 300, log_path, "the LiteLLM proxy"), 2
        )
    except BaseException:
        stop(proc)
        raise
    return target


# --------------------------------------------------------------------------------------------------------------
# Gemma: time to first token and tokens/s through the gateway
# --------------------------------------------------------------------------------------------------------------


def stream_timing(
    host: str, port: int, path: str, body: dict[str, Any], headers: dict[str, str], timeout_s: float = 120.0
) -> dict[str, Any]:
    """One streamed request: ms to the first token (first SSE event with text), decode tokens/s after it."""
    data = json.dumps(body).encode()
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    t0 = time.perf_counter()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json", **headers})
    resp = conn.getresponse()
    if resp.status != 200:
        text = resp.read()[:500]
        conn.close()
        raise RuntimeError(f"HTTP {resp.status} from {host}:{port}{path}: {text!r}")
    first = last = None
    events = 0
    usage = None
    text_parts: list[str] = []
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            break
        obj = json.loads(payload)
        usage = obj.get("usage") or usage
        for choice in obj.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
            if piece:
                now = time.perf_counter()
                first = first if first is not None else now
                last = now
                events += 1
                text_parts.append(piece)
    total = time.perf_counter() - t0
    conn.close()
    if first is None:
        raise RuntimeError(f"no token streamed from {host}:{port}{path}")
    # Rates count streamed text events (llama.cpp sends one per token); the usage the server reports (the gateway
    # may estimate it) is kept beside them.
    tokens = events
    decode_s = (last - first) if last is not None else 0.0
    return {
        "ttft_ms": (first - t0) * 1000,
        "total_ms": total * 1000,
        "tokens": tokens,
        "usage_completion_tokens": (usage or {}).get("completion_tokens"),
        "tokens_per_s": (tokens - 1) / decode_s if decode_s > 0 and tokens > 1 else None,
        "e2e_tokens_per_s": tokens / total if total > 0 else None,
        "text": "".join(text_parts),
    }


def _gemma_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ttft = [r["ttft_ms"] for r in runs]
    tps = [r["tokens_per_s"] for r in runs if r["tokens_per_s"]]
    e2e = [r["e2e_tokens_per_s"] for r in runs if r["e2e_tokens_per_s"]]
    return {
        "n": len(runs),
        "ttft_ms": round(statistics.median(ttft), 2),
        "ttft_ms_min": round(min(ttft), 2),
        "ttft_ms_max": round(max(ttft), 2),
        "tokens_per_s": round(statistics.median(tps), 2) if tps else None,
        "e2e_tokens_per_s": round(statistics.median(e2e), 2) if e2e else None,
        "tokens_mean": round(statistics.fmean(r["tokens"] for r in runs), 1),
        "usage_completion_tokens_last": runs[-1]["usage_completion_tokens"],
        "sample": runs[-1]["text"][:200],
    }


def measure_gemma(agenix: Target, llm: Any, n: int, max_tokens: int, log: Log) -> dict[str, Any]:
    """``n`` streamed chat completions to ``gemma-3-270m`` through the gateway after one warm-up; the same count
    straight to the llama.cpp server's /v1/completions (reference: its own plain prompt, not the gateway's)."""
    via_body = {
        "model": GEMMA_MODEL,
        "messages": [{"role": "user", "content": GEMMA_PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    direct_body = {
        "model": GEMMA_MODEL,
        "prompt": f"Question: {GEMMA_PROMPT}\nAnswer:",
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    via, direct = [], []
    stream_timing(agenix.host, agenix.port, "/v1/chat/completions", via_body, agenix.headers)  # warm-up
    stream_timing(llm.host, llm.port, "/v1/completions", direct_body, {})
    for _ in range(n):
        via.append(stream_timing(agenix.host, agenix.port, "/v1/chat/completions", via_body, agenix.headers))
        direct.append(stream_timing(llm.host, llm.port, "/v1/completions", direct_body, {}))
    out = {
        **_gemma_summary(via),
        "max_tokens": max_tokens,
        "prompt": GEMMA_PROMPT,
        "direct": {**_gemma_summary(direct), "note": "llama.cpp /v1/completions, prompt 'Question: ...\\nAnswer:'"},
    }
    if log:
        log(
            f"gemma via gateway: TTFT {out['ttft_ms']:.0f} ms, {out['tokens_per_s'] or 0:.1f} tokens/s; direct: TTFT "
            f"{out['direct']['ttft_ms']:.0f} ms, {out['direct']['tokens_per_s'] or 0:.1f} tokens/s"
        )
    return out


# --------------------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _affinity(cpus: set[int] | None):
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _versions(litellm_version: str | None) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name in ("agenix", "fastapi", "uvicorn", "uvloop", "httptools", "httpx", "starlette"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    if litellm_version:
        out["litellm"] = litellm_version
    out["wrk"] = wrk_version()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if rev.returncode == 0:
            out["agenix_git"] = rev.stdout.strip()
    return out


def run_gateway_benchmark(
    json_path: str | Path | None = None,
    *,
    requests: int = 2000,
    warmup: int = 200,
    block: int = 50,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    connections: Sequence[int] = DEFAULT_CONNECTIONS,
    wrk_threads: int = 1,
    include_agenix: bool = True,
    include_litellm: bool = True,
    include_gemma: bool = True,
    gemma_requests: int = 5,
    gemma_max_tokens: int = 64,
    pin: bool = True,
    litellm_venv: str | Path | None = None,
    setup_litellm: bool = True,
    litellm_config: str | Path | None = None,
    workdir: str | Path | None = None,
    keep: bool = False,
    log: Log = _log_stderr,
) -> dict[str, Any]:
    """Run the gateway benchmark (see the module docstring); returns the results and writes them to ``json_path``."""
    say = log or (lambda _m: None)
    wrk_path()  # fail before starting anything
    connections = tuple(int(c) for c in connections)
    started_at = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    temp = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="agenix-bench-gateway-")) if temp else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    load_cpus, server_cpus = cpu_layout(pin)
    venv = Path(litellm_venv) if litellm_venv else DEFAULT_LITELLM_VENV
    say(
        f"workdir {workdir}; CPUs: load side {sorted(load_cpus) if load_cpus else 'any'}, "
        f"server {sorted(server_cpus) if server_cpus else 'any'}"
    )

    notes: list[str] = []
    litellm_version: str | None = None
    litellm_skip: str | None = None
    if not include_litellm:
        litellm_skip = "not requested (include_litellm=False)"
    else:
        litellm_version = ensure_litellm_venv(venv, setup=setup_litellm, log=say)

    targets: list[Target] = []
    gemma: dict[str, Any] = {"skipped": "not requested (include_gemma=False)"} if not include_gemma else {}
    gemma_port = free_port() if include_gemma and include_agenix else None
    gemma_url = f"http://127.0.0.1:{gemma_port}/v1" if gemma_port else None
    latency: dict[str, dict[str, Any]] = {}
    throughput: dict[str, list[dict[str, Any]]] = {}
    agenix: Target | None = None
    litellm: Target | None = None
    stub: Target | None = None
    ok = False
    try:
        stub = start_stub(workdir, load_cpus)
        targets.append(stub)
        say(f"stub backend on :{stub.port}")
        if include_agenix:
            agenix = start_agenix(workdir, stub, server_cpus, gemma_url, say)
            check_answer(agenix)
            targets.append(agenix)
            say(f"Agenix gateway on :{agenix.port}, ready in {agenix.info['startup_seconds']} s")
        if include_litellm:
            litellm = start_litellm(
                workdir, stub, venv, server_cpus, say, Path(litellm_config) if litellm_config else None
            )
            check_answer(litellm)
            targets.append(litellm)
            say(f"LiteLLM {litellm_version} on :{litellm.port}, ready in {litellm.info['startup_seconds']} s")
        check_answer(stub)

        with _affinity(load_cpus):
            say(
                f"added latency: {warmup} warm-up + {requests} timed requests per target, one in flight, "
                f"blocks of {block}"
            )
            latency = measure_latency(targets, requests, warmup, block, say)
        for t in targets:
            say(
                f"latency {t.name:<8} p50 {latency[t.name]['p50_ms']:.3f} ms  p99 {latency[t.name]['p99_ms']:.3f} ms"
                f"  errors {latency[t.name]['errors']}"
            )
        say(
            f"throughput: wrk -t{wrk_threads}, connections {list(connections)}, {duration_s:g} s each after "
            f"{warmup_s:g} s warm-up"
        )
        throughput = measure_throughput(
            targets, workdir, connections, duration_s, warmup_s, threads=wrk_threads, cpus=load_cpus, log=say
        )

        if include_gemma and agenix is not None:
            if litellm is not None:  # free the core before llama.cpp runs
                litellm.info["exit_code"] = stop(litellm.proc)
            gemma = _run_gemma(agenix, gemma_port, gemma_requests, gemma_max_tokens, workdir, say)
        elif include_gemma:
            gemma = {"skipped": "needs the Agenix gateway (include_agenix=False)"}
        ok = True
    finally:
        for t in reversed(targets):
            if t.proc is not None and t.proc.poll() is None:
                t.info["exit_code"] = stop(t.proc)
        if not ok:
            say(f"failed; processes stopped, their logs are kept in {workdir / 'logs'}")

    load_after = os.getloadavg()
    base = latency.get("stub", {})

    def target_result(t: Target) -> dict[str, Any]:
        lat = latency.get(t.name, {})
        levels = throughput.get(t.name, [])
        out: dict[str, Any] = {
            "p50_ms": lat.get("p50_ms"),
            "p99_ms": lat.get("p99_ms"),
            **best_throughput(levels),
            "latency": lat,
            "throughput": levels,
            "startup_seconds": t.info.get("startup_seconds"),
        }
        if t.name != "stub" and lat and base:
            out = {
                "p50_added_ms": round(lat["p50_ms"] - base["p50_ms"], 4),
                "p99_added_ms": round(lat["p99_ms"] - base["p99_ms"], 4),
                "mean_added_ms": round(lat["mean_ms"] - base["mean_ms"], 4),
                **out,
            }
        out["errors"] = out.get("errors", 0) + lat.get("errors", 0)
        return out

    result: dict[str, Any] = {"stub": target_result(stub) if stub else {}}
    if agenix is not None:
        result["agenix"] = target_result(agenix)
        result["agenix"]["request_log_records"] = count_jsonl_records(Path(agenix.info["home"]) / "logs")
        result["agenix"]["config"] = {
            "team": BENCH_TEAM,
            "key_rpm": BENCH_RPM,
            "key_tpm": BENCH_TPM,
            "team_rpm": BENCH_RPM,
            "team_tpm": BENCH_TPM,
            "team_monthly_budget": BENCH_BUDGET,
            "model": STUB_MODEL,
            "on": "API-key auth (key limited to models stub and gemma-3-270m), per-key and per-team rpm/tpm limits "
            "and budget, routing (direct model), direct guardrails as shipped, JSONL request log as shipped",
        }
    else:
        result["agenix"] = {"skipped": "not requested (include_agenix=False)"}
    if litellm is not None:
        result["litellm"] = target_result(litellm)
        result["litellm"]["request_log_records"] = count_jsonl_records(
            Path(litellm.info["request_log"]).parent, "requests.jsonl"
        )
        result["litellm"]["version"] = litellm_version
        result["litellm"]["config_file"] = str(litellm_config or LITELLM_DIR / "config.yaml")
        result["litellm"]["config"] = {
            "workers": 1,
            "auth": "general_settings.master_key (sk-, 48 random chars)",
            "rate_limit": "deployment rpm 10,000,000 / tpm 10,000,000,000, router usage-based-routing-v2 (in memory)",
            "request_log": "callback request_log.logger: the standard logging payload as JSONL, flushed every 1 s",
            "other": "uvicorn access log on (LiteLLM's default); no database, no Redis; cost map local",
        }
    else:
        result["litellm"] = {"skipped": litellm_skip or "not started"}

    ag, ll = result.get("agenix", {}), result.get("litellm", {})
    ratios: dict[str, Any] = {}
    if ag.get("max_rps") and ll.get("max_rps"):
        ratios["throughput_agenix_over_litellm"] = round(ag["max_rps"] / ll["max_rps"], 2)
    if ag.get("p50_added_ms") is not None and ll.get("p50_added_ms") is not None and ag["p50_added_ms"] > 0:
        ratios["added_p50_litellm_over_agenix"] = round(ll["p50_added_ms"] / ag["p50_added_ms"], 2)
    if ag.get("p99_added_ms") is not None and ll.get("p99_added_ms") is not None and ag["p99_added_ms"] > 0:
        ratios["added_p99_litellm_over_agenix"] = round(ll["p99_added_ms"] / ag["p99_added_ms"], 2)
    if ag.get("max_rps") and result["stub"].get("max_rps"):
        ratios["agenix_over_stub_direct_rps"] = round(ag["max_rps"] / result["stub"]["max_rps"], 3)
    result["ratios"] = ratios
    targets_met: dict[str, Any] = {}
    if ag.get("p50_added_ms") is not None:
        targets_met["p50_added_under_1ms"] = ag["p50_added_ms"] < TARGET_P50_ADDED_MS
    if "throughput_agenix_over_litellm" in ratios:
        targets_met["throughput_10x_litellm"] = ratios["throughput_agenix_over_litellm"] >= TARGET_THROUGHPUT_RATIO
    if ag.get("errors") or ll.get("errors"):
        notes.append("errors were counted during the run: see errors/non_2xx per target and per level")
    result["targets"] = {
        "p50_added_ms": TARGET_P50_ADDED_MS,
        "throughput_ratio": TARGET_THROUGHPUT_RATIO,
        "met": targets_met,
        "litellm_anchor": ANCHOR_LITELLM,
    }
    result["gemma"] = gemma
    result["meta"] = {
        "date": started_at.isoformat(timespec="seconds"),
        "seconds_total": round((dt.datetime.now(dt.UTC) - started_at).total_seconds(), 1),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "pinning": {
            "load_side_cpus": sorted(load_cpus) if load_cpus else None,
            "server_cpus": sorted(server_cpus) if server_cpus else None,
            "layout": (
                "wrk, latency client and stub on the load-side CPU; the gateway under test alone on the server CPU"
                if load_cpus
                else "not pinned"
            ),
        },
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "latency_method": {
            "requests": requests,
            "warmup": warmup,
            "block": block,
            "client": "raw socket, HTTP/1.1 keep-alive",
            "added": "difference of percentiles: p50(via gateway) - p50(stub direct); likewise p99 and mean",
        },
        "throughput_method": {
            "tool": "wrk",
            "threads": wrk_threads,
            "connections": list(connections),
            "duration_s": duration_s,
            "warmup_s": warmup_s,
            "max_rps": (
                "best good-answer rate over the connection levels; wrk counts status >= 400 as non_2xx, "
                "connect/read/write/timeout as socket errors"
            ),
        },
        "request": {"path": "/v1/chat/completions", "body": json.loads(chat_body())},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": _versions(litellm_version),
        "workdir": str(workdir) if (keep or not temp) else None,
        "notes": notes,
    }
    if temp and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if json_path is not None:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def _run_gemma(agenix: Target, port: int | None, n: int, max_tokens: int, workdir: Path, say: Callable) -> dict:
    try:
        from serving.model_server import LlamaCppServer
    except ImportError as exc:
        say(f"gemma skipped: {exc}")
        return {"skipped": f"serving.model_server is not available: {exc}"}
    server = LlamaCppServer(port=port, log_path=workdir / "logs" / "llama-server.log")
    try:
        server.start(timeout=180)
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        say(f"gemma skipped: the model server did not start: {first}")
        server.stop()
        return {"skipped": f"the llama.cpp model server did not start: {first}", "log": str(server.log_path)}
    try:
        say(
            f"gemma: llama.cpp server ready in {server.startup_seconds:.1f} s on :{server.port} "
            f"({server.n_threads} threads); {n} streamed requests of up to {max_tokens} tokens"
        )
        llm = Target("llama", server.host, int(server.port))
        out = measure_gemma(agenix, llm, n, max_tokens, say)
        out["server_startup_seconds"] = round(server.startup_seconds or 0.0, 2)
        out["n_threads"] = server.n_threads
        return out
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        say(f"gemma failed: {exc}")
        return {"skipped": f"measurement failed: {exc}", "log": str(server.log_path)}
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------------------


def format_table(result: dict[str, Any]) -> str:
    meta = result.get("meta", {})
    lm, tm = meta.get("latency_method", {}), meta.get("throughput_method", {})
    pins = meta.get("pinning", {})
    lines = [
        "Gateway benchmark - constant-time stub backend, one server process each",
        (
            f"{meta.get('usable_cpus', '?')} CPUs ({pins.get('layout', '?')}), load avg "
            f"{meta.get('load_average_before', ['?'])[0]} -> {meta.get('load_average_after', ['?'])[0]}, "
            f"{meta.get('date', '')}"
        ),
        (
            f"latency: {lm.get('requests')} sequential requests per target (one in flight, keep-alive, after "
            f"{lm.get('warmup')} warm-up); added = p(via) - p(direct)"
        ),
        (
            f"throughput: wrk -t{tm.get('threads')} -c{tm.get('connections')} {tm.get('duration_s')} s each "
            f"(after {tm.get('warmup_s')} s warm-up); max rps = best good-answer rate"
        ),
    ]
    header = (
        f"{'target':<10}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}{'max rps':>11}{'at -c':>7}"
        f"{'errors':>8}"
    )
    lines += ["", header, "-" * len(header)]
    for name, label in (("stub", "stub"), ("agenix", "agenix"), ("litellm", "litellm")):
        row = result.get(name) or {}
        if "skipped" in row:
            lines.append(f"{label:<10}skipped: {row['skipped']}")
            continue
        if not row:
            continue
        errors = row.get("errors", 0)
        lines.append(
            f"{label:<10}{fmt(row.get('p50_ms'), 3):>9}{fmt(row.get('p99_ms'), 3):>9}"
            f"{fmt(row.get('p50_added_ms'), 3):>11}{fmt(row.get('p99_added_ms'), 3):>11}"
            f"{fmt(row.get('max_rps'), 0):>11}{fmt(row.get('max_rps_connections')):>7}"
            f"{fmt(errors):>8}" + ("  <- ERRORS" if errors else "")
        )
    lines.append("-" * len(header))
    levels = {
        name: {r["connections"]: r for r in (result.get(name) or {}).get("throughput", [])} for name in TARGET_NAMES
    }
    all_c = sorted({c for lv in levels.values() for c in lv})
    if all_c:
        lines.append(
            "req/s by connections: "
            + "; ".join(
                f"{name} " + ", ".join(f"c{c} {fmt(levels[name][c]['ok_rps'], 0)}" for c in all_c if c in levels[name])
                for name in TARGET_NAMES
                if levels[name]
            )
        )
    ratios, targets = result.get("ratios", {}), result.get("targets", {})
    met = targets.get("met", {})

    def ok(key: str) -> str:
        return "" if key not in met else (" ok" if met[key] else " MISSED")

    lines.append("")
    if "throughput_agenix_over_litellm" in ratios:
        lines.append(
            f"throughput agenix / litellm: {ratios['throughput_agenix_over_litellm']:.1f}x "
            f"(target >= {TARGET_THROUGHPUT_RATIO:g}x:{ok('throughput_10x_litellm')})"
        )
    if "added_p50_litellm_over_agenix" in ratios:
        lines.append(
            f"added latency litellm / agenix: p50 {ratios['added_p50_litellm_over_agenix']:.1f}x, "
            f"p99 {ratios.get('added_p99_litellm_over_agenix', float('nan')):.1f}x"
        )
    ag = result.get("agenix") or {}
    if ag.get("p50_added_ms") is not None:
        lines.append(
            f"agenix added p50 {ag['p50_added_ms']:.3f} ms (target < {TARGET_P50_ADDED_MS:g} ms:"
            f"{ok('p50_added_under_1ms')}); request-log records written {ag.get('request_log_records')}"
        )
    if "agenix_over_stub_direct_rps" in ratios:
        lines.append(f"agenix max rps / stub direct (load-side ceiling): {ratios['agenix_over_stub_direct_rps']:.2f}")
    gemma = result.get("gemma") or {}
    if "skipped" in gemma:
        lines.append(f"gemma: skipped: {gemma['skipped']}")
    elif gemma:
        d = gemma.get("direct", {})
        lines.append(
            f"gemma-3-270m via gateway: TTFT {gemma['ttft_ms']:.0f} ms, {fmt(gemma.get('tokens_per_s'), 1)} tokens/s "
            f"decode ({gemma['n']} streamed requests, {gemma['tokens_mean']:.0f} tokens); llama.cpp direct: TTFT "
            f"{fmt(d.get('ttft_ms'), 0)} ms, {fmt(d.get('tokens_per_s'), 1)} tokens/s"
        )
    for note in meta.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def print_table(result: dict[str, Any]) -> None:
    print(format_table(result))


__all__ = [
    "KeepAliveClient",
    "build_request",
    "ensure_litellm_venv",
    "format_table",
    "measure_latency",
    "percentile",
    "print_table",
    "run_gateway_benchmark",
    "run_wrk",
    "wrk_script",
]
