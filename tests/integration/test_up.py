"""`agenix up`: the local stack starts with one command, serves, and stops completely on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx

from serving.auth import KeyStore, keys_file
from serving.model_server import free_port


def _open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_starts_chroma_llm_and_gateway_and_sigterm_stops_them_all(first_run, tmp_path):
    source, _, _ = first_run
    home, config = tmp_path / "home", tmp_path / "config"
    shutil.copytree(source.home, home)
    shutil.copytree(source.config_dir, config)
    key = KeyStore(keys_file(home)).create("support", use_cases=("support-assistant",))[0]
    ports = {"gateway": free_port(), "llm": free_port(), "chroma": free_port()}
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agenix_assets.cli", "up", "--no-ui", "--skip-materialize", "--home", str(home),
         "--config-dir", str(config), "--gateway-port", str(ports["gateway"]), "--llm-port", str(ports["llm"]),
         "--chroma-port", str(ports["chroma"])],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.monotonic() + 240
        while b"[up] ready" not in (tmp_path / "up.log").read_bytes():
            assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()[-3000:]
            time.sleep(0.5)
        assert all(_open(p) for p in ports.values())
        resp = httpx.post(
            f"http://127.0.0.1:{ports['gateway']}/v1/chat/completions", timeout=60,
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "support-assistant",
                  "messages": [{"role": "user", "content": "How long is the run-in period of the GV-4150 Gate Valve?"}]})
        assert resp.status_code == 200 and "6 hours" in resp.json()["choices"][0]["message"]["content"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
        assert b"[up] stopped" in (tmp_path / "up.log").read_bytes()
        time.sleep(1)
        assert [name for name, p in ports.items() if _open(p)] == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
