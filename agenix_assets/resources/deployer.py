"""The deployer: puts a release in force in an environment, and smoke-tests it there.

``LocalDeployer`` is the embedded default: "in force" is the live manifest under ``AGENIX_HOME/deployments/`` that
the gateway re-reads within a second; the smoke test starts a real gateway process for the environment on a free
loopback port, asks a few questions over HTTP with a short-lived API key, and stops it. A Kubernetes deployer
(issue 13) implements the same two methods against a cluster.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalDeployer(dg.ConfigurableResource):
    """Writes live manifests under AGENIX_HOME/deployments; smoke-tests through a gateway process over HTTP."""

    gateway_start_timeout_s: float = 180.0
    request_timeout_s: float = 60.0

    def apply(self, home: Path, manifest: Any) -> Path:
        from ..core.deployment import write_live_manifest

        return write_live_manifest(home, manifest)

    def smoke_test(self, *, home: Path, config_dir: Path, environment: str, use_case: str, release: str,
                   questions: list[str], log: Any = None) -> dict[str, Any]:
        """Ask ``questions`` of ``use_case`` through a gateway serving ``environment``'s manifest. Each answer
        must come back 200 from ``release`` with a non-empty text; returns per-question results and figures."""
        import httpx

        from serving.auth import KeyStore, keys_file

        port = _free_port()
        store = KeyStore(keys_file(Path(home)))
        key, record = store.create("agenix-deployer", name=f"smoke test of {release} in {environment}",
                                   use_cases=[use_case], expires_in_days=1)
        agenix = shutil.which("agenix", path=str(Path(sys.executable).parent)) or "agenix"
        cmd = [agenix, "gateway", "--env", environment, "--port", str(port), "--home", str(home),
               "--config-dir", str(config_dir)]
        logfile = Path(home) / "logs" / f"smoke-{environment}-{release}.log"
        logfile.parent.mkdir(parents=True, exist_ok=True)
        results: list[dict[str, Any]] = []
        with open(logfile, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "AGENIX_HOME": str(home)})
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + self.gateway_start_timeout_s
            ready = False
            with httpx.Client(timeout=self.request_timeout_s) as client:
                while time.monotonic() < deadline and proc.poll() is None:
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{base}/readyz").status_code == 200:
                            ready = True
                            break
                    time.sleep(0.5)
                if not ready:
                    tail = logfile.read_text(errors="replace")[-1500:]
                    return {"passed": False, "reason": f"the {environment} gateway did not become ready within "
                            f"{self.gateway_start_timeout_s:.0f} s (exit {proc.poll()}); its log {logfile}: {tail}",
                            "results": [], "log": str(logfile)}
                for q in questions:
                    t0 = time.perf_counter()
                    r = client.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                    json={"model": use_case, "messages": [{"role": "user", "content": q}]})
                    ms = (time.perf_counter() - t0) * 1000
                    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                    ext = body.get("agenix") or {}
                    text = ((body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
                    problem = None
                    if r.status_code != 200:
                        problem = f"HTTP {r.status_code}: {(body.get('error') or {}).get('message', '')[:200]}"
                    elif ext.get("release") != release:
                        problem = f"served by release {ext.get('release')!r}, not {release!r}"
                    elif not text.strip():
                        problem = "empty answer"
                    results.append({"question": q, "status": r.status_code, "latency_ms": round(ms, 1),
                                    "release": ext.get("release"), "answered": ext.get("answered"),
                                    "answer": text[:300], "problem": problem})
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            store.revoke(record.key_id)
        failed = [r for r in results if r["problem"]]
        return {
            "passed": bool(results) and not failed,
            "reason": (f"{len(results) - len(failed)}/{len(results)} smoke questions answered by {release}"
                       + (": " + "; ".join(f"{r['question'][:60]!r}: {r['problem']}" for r in failed) if failed else "")),
            "results": results,
            "log": str(logfile),
        }
