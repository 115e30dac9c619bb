"""The gateway benchmark, small and fast: the stub backend is a valid OpenAI-compatible server (the official
``openai`` client against it, plain and streamed), and a tiny run (a few hundred sequential requests, 2 s of wrk)
against the stub and the Agenix gateway returns the JSON shape with positive numbers. LiteLLM and Gemma are left
out here (``include_litellm=False``, ``include_gemma=False``); speed targets are not asserted (they are what the
benchmark measures, on a quiet machine).

Needs Debian's ``wrk`` (``apt-get install -y wrk``): without it the benchmark test fails, saying so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agenix_bench import gateway as bench
from agenix_bench.stub_backend import ANSWER, ANSWER_TOKENS, USAGE

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stub(tmp_path):
    port = bench.free_port()
    log = tmp_path / "stub.log"
    proc = bench.spawn([sys.executable, "-m", "agenix_bench.stub_backend", "--port", str(port)], log, cwd=REPO)
    try:
        bench.wait_http(f"http://127.0.0.1:{port}/v1/models", proc, 30, log, "the stub backend")
        yield port
    finally:
        bench.stop(proc)


def test_stub_is_an_openai_server(stub):
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{stub}/v1", api_key="unused", max_retries=0, timeout=10)
    assert [m.id for m in client.models.list().data] == ["stub"]

    reply = client.chat.completions.create(model="anything", messages=[{"role": "user", "content": "hi"}])
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == ANSWER
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == USAGE["prompt_tokens"]
    assert reply.usage.completion_tokens == USAGE["completion_tokens"]

    chunks = list(
        client.chat.completions.create(
            model="anything",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER == "".join(ANSWER_TOKENS)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == USAGE["total_tokens"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    completion = client.completions.create(model="anything", prompt="Say something")
    assert completion.choices[0].text == ANSWER

    # keep-alive and pipelining on one connection, the lean client the benchmark times with
    request = bench.build_request("127.0.0.1", stub, "/v1/chat/completions", bench.chat_body())
    with bench.KeepAliveClient("127.0.0.1", stub) as lean:
        for _ in range(50):
            status, body = lean.roundtrip(request)
            assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == ANSWER
        assert lean.connects == 1
        lean.sock.sendall(request * 3)  # three pipelined requests, three answers in order
        answers = [lean.roundtrip(b"")[0] for _ in range(3)]
        assert answers == [200, 200, 200]


def test_stub_rejects_garbage(stub):
    with bench.KeepAliveClient("127.0.0.1", stub) as lean:
        status, _ = lean.roundtrip(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 404
        status, body = lean.roundtrip(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and b'"stub"' in body


def test_wrk_script_parses(tmp_path, stub):
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: `apt-get install -y wrk` (the gateway benchmark's load generator)")
    script = tmp_path / "post.lua"
    script.write_text(bench.wrk_script(bench.chat_body(), {"Authorization": "Bearer sk-]]-odd"}))
    res = bench.run_wrk(f"http://127.0.0.1:{stub}/v1/chat/completions", script, 4, 1)
    assert res["requests"] > 0 and res["ok_rps"] > 0 and res["errors"] == 0
    # a wrong path is counted as non-2xx, never as throughput
    bad = bench.run_wrk(f"http://127.0.0.1:{stub}/v1/nope", script, 4, 1)
    assert bad["non_2xx"] == bad["requests"] > 0 and bad["ok_rps"] == 0


def test_gateway_benchmark_small(tmp_path):
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: `apt-get install -y wrk` (the gateway benchmark's load generator)")
    out = tmp_path / "out" / "gateway.json"
    result = bench.run_gateway_benchmark(
        out,
        requests=300,
        warmup=30,
        block=25,
        duration_s=2,
        warmup_s=0,
        connections=(8,),
        include_litellm=False,
        include_gemma=False,
        workdir=tmp_path / "work",
        log=None,
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result, default=str))
    bench.format_table(result)  # renders

    assert {"stub", "agenix", "litellm", "ratios", "targets", "gemma", "meta"} <= set(result)
    assert "skipped" in result["litellm"] and "skipped" in result["gemma"]
    stub, agenix = result["stub"], result["agenix"]
    for row in (stub, agenix):
        assert row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"]
        assert row["max_rps"] > 0 and row["errors"] == 0
        assert row["latency"]["n"] == 300 and row["latency"]["connections"] == 1  # one keep-alive connection
        assert len(row["throughput"]) == 1 and row["throughput"][0]["connections"] == 8
    assert {"p50_added_ms", "p99_added_ms", "max_rps"} <= set(agenix)
    assert agenix["p50_added_ms"] == pytest.approx(agenix["p50_ms"] - stub["p50_ms"], abs=1e-3)
    assert agenix["p50_added_ms"] > 0  # a gateway in front of the stub cannot be faster than the stub
    # logging was on: every answered request has a request-log record (flushed when the gateway stopped)
    answered = 330 + agenix["throughput"][0]["requests"]
    assert agenix["request_log_records"] >= 0.95 * answered
    meta = result["meta"]
    assert meta["latency_method"]["requests"] == 300 and meta["throughput_method"]["connections"] == [8]
    assert len(meta["load_average_before"]) == 3 and meta["versions"]["wrk"]


def test_litellm_config_is_complete():
    """The LiteLLM side is configured as the benchmark documents it (key, limit, logging), pinned exactly."""
    import yaml

    cfg = yaml.safe_load((bench.LITELLM_DIR / "config.yaml").read_text())
    assert cfg["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    (model,) = cfg["model_list"]
    assert model["model_name"] == "stub" and model["litellm_params"]["model"] == "openai/stub"
    assert model["litellm_params"]["rpm"] > 0 and model["litellm_params"]["tpm"] > 0
    assert cfg["router_settings"]["routing_strategy"] == "usage-based-routing-v2"
    assert cfg["litellm_settings"]["callbacks"] == "request_log.logger"
    assert (bench.LITELLM_DIR / "request_log.py").is_file()
    assert bench.litellm_pin() != "1.107.0"
    constraints = (bench.LITELLM_DIR / "constraints.txt").read_text()
    assert f"litellm=={bench.litellm_pin()}" in constraints


def test_agenix_bench_gateway_help_lists_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "agenix_assets.cli", "bench", "gateway", "--help"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    for option in ("--no-litellm", "--no-agenix", "--no-gemma", "--litellm-config", "--keep"):
        assert option in out.stdout, option
