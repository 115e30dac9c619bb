"""What a request is charged and what a client is told when a backend fails: pure record-keeping, no server."""

from __future__ import annotations

import aiohttp

from serving.app import RequestRecord
from serving.backends import _status_error, _transport_error
from serving.config import ModelSpec

GEMMA = ModelSpec(name="gemma", base_url="http://10.0.3.7:8090/v1", price_per_1k_input=0.02, price_per_1k_output=0.04)
EXTRACTIVE = ModelSpec(name="extractive", kind="extractive", prompt_style="none")


def test_every_generated_answer_is_charged_and_one_estimate_marks_the_total():
    rec = RequestRecord.start("chat")
    rec.add_usage(GEMMA, 100, 20, "backend")  # generated, then rejected as ungrounded
    assert rec.usage_note() == {"usage_source": "backend", "usage_estimated": False}
    rec.add_usage(EXTRACTIVE, 30, 10, "estimate")  # the next tier answered with word counts
    assert rec.usage() == {"prompt_tokens": 130, "completion_tokens": 30, "total_tokens": 160}
    assert abs(rec.cost - (100 * 0.02 + 20 * 0.04) / 1000) < 1e-12
    assert rec.usage_note() == {"usage_source": "estimate", "usage_estimated": True}


def test_a_tokenizer_count_is_not_an_estimate_but_is_told_apart_from_backend_usage():
    rec = RequestRecord.start("chat")
    rec.add_usage(GEMMA, 18, 12, "tokenizer")
    rec.add_usage(GEMMA, 0, 0, "backend")
    assert rec.usage_note() == {"usage_source": "tokenizer", "usage_estimated": False}


def test_a_backend_error_tells_the_client_the_kind_of_failure_only():
    err = _status_error(GEMMA, GEMMA.url() + "/completions", 500, b'{"error": "worker 10.0.3.7:8090 died, /srv/m.gguf"}')
    assert err.public == "HTTP 500" and err.retryable
    assert "10.0.3.7:8090" in str(err) and "/srv/m.gguf" in str(err)  # for the logs
    refused = _transport_error(GEMMA, GEMMA.url() + "/completions", aiohttp.ClientConnectionError("10.0.3.7:8090 refused"))
    assert refused.public == "connection failed" and "10.0.3.7" in str(refused)
    assert _transport_error(GEMMA, "u", TimeoutError()).public == "timed out"
    rec = RequestRecord.start("chat")
    rec.fallbacks = [{"model": "gemma", "error": str(err), "public": err.public},
                     {"model": "extractive", "error": "no sentence relevant enough"}]
    assert rec.failures() == "gemma: HTTP 500; extractive: no sentence relevant enough"
