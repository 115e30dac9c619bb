"""The Dagster webserver loads the code location and its GraphQL API lists every asset."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from agenix_assets.definitions import build_definitions
from tests.conftest import REPO

QUERY = "{ assetNodes { assetKey { path } groupName } }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webserver_graphql_lists_every_asset(tmp_path: Path):
    port = _free_port()
    env = {**os.environ, "AGENIX_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster")}
    (tmp_path / "dagster").mkdir()
    webserver = Path(sys.executable).parent / "dagster-webserver"
    proc = subprocess.Popen(
        [str(webserver), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        deadline = time.monotonic() + 180
        nodes = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                response = httpx.post(url, json={"query": QUERY}, timeout=10)
                data = response.json().get("data") or {}
                if data.get("assetNodes"):
                    nodes = data["assetNodes"]
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert nodes is not None, "webserver did not serve the asset graph within 180 s"
        served = {"/".join(n["assetKey"]["path"]) for n in nodes}
        expected = {k.to_user_string() for k in build_definitions().resolve_asset_graph().get_all_asset_keys()}
        assert served == expected
        groups = {n["groupName"] for n in nodes}
        assert {"governance", "sources", "transform"} <= groups
    finally:
        proc.terminate()
        proc.wait(timeout=30)
