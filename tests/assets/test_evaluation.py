"""Release candidates evaluated through the gateway's own RAG pipeline and the real model server (Gemma 3 270M on
llama.cpp), on the small sample company: a prompt change makes a new candidate whose eval report compares with
production; a candidate below its charter fails its blocking gate with the failing metric and examples; refusals
and golden conversations; `agenix eval` prints the asset's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from serving.model_server import LlamaCppServer, free_port
from tests.platform import asset_metadata, check_evaluations

REPO = Path(__file__).resolve().parents[2]
UC = "support_assistant"
CANDIDATE = dg.AssetKey([UC, "release_candidate"])
REPORT = dg.AssetKey([UC, "eval_report"])
PROMPTS = dg.AssetKey([UC, "prompt_registry"])
MODELS = dg.AssetKey(["registry", "models"])
RETRIEVAL = dg.AssetKey([UC, "retrieval_config"])
EVAL_KEYS = [MODELS, PROMPTS, RETRIEVAL, CANDIDATE, REPORT]


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    server = LlamaCppServer(port=free_port(), log_path=tmp_path_factory.mktemp("llm") / "llama.log")
    server.start(timeout=120)
    old = os.environ.get("AGENIX_LLM_URL")
    os.environ["AGENIX_LLM_URL"] = server.base_url  # models.yaml: base_url ${AGENIX_LLM_URL:-...}
    yield server
    server.stop()
    if old is None:
        os.environ.pop("AGENIX_LLM_URL", None)
    else:
        os.environ["AGENIX_LLM_URL"] = old


def small_suite(platform, answerable: int = 4, paraphrases: int = 3, conversations: int = 1) -> Path:
    """A short suite cut from the sample company's own (so an evaluation takes seconds): generator-worded and
    paraphrased questions, the unanswerable ones about products the catalog does not have, and the follow-up
    conversation."""
    import re

    path = platform.landing / "_manifest" / "golden" / "support-assistant.yaml"
    suite = yaml.safe_load(path.read_text())
    items = suite["items"]
    code = re.compile(r"\b[A-Za-z]{2,4}-\d{3,6}\b")
    keep = ([i for i in items if i.get("answerable", True) and i.get("phrasing", "generator") == "generator"][:answerable]
            + [i for i in items if i.get("phrasing") == "paraphrase"][:paraphrases]
            + [i for i in items if not i.get("answerable", True) and code.search(i["question"])][:2])
    suite["items"] = keep
    suite["conversations"] = suite.get("conversations", [])[:conversations]
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def add_prompt_version(config: Path, name: str, answers: str | None = None) -> None:
    path = config / "prompts" / "support-assistant.yaml"
    book = yaml.safe_load(path.read_text())
    latest = book["versions"][sorted(book["versions"])[-1]]
    new = json.loads(json.dumps(latest))
    new["description"] = f"test version {name}"
    if answers is not None:  # teach the base model to answer with a fixed sentence: wrong for every question
        for ex in new["completion"]["few_shot"]:
            ex["answer"] = answers
    book["versions"][name] = new
    path.write_text(yaml.safe_dump(book, sort_keys=False))


def set_candidate(config: Path, **parts) -> None:
    path = config / "releases" / "support-assistant.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["candidate"].update(parts)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def data_versions(platform, keys) -> dict[str, str | None]:
    out = {}
    for key in keys:
        event = platform.instance.get_latest_materialization_event(key)
        mat = event.asset_materialization if event else None
        out[key.to_user_string()] = mat.tags.get("dagster/data_version") if mat else None
    return out


def test_prompt_change_makes_a_candidate_evaluated_against_production(platform, llm):
    small_suite(platform)
    first = platform.run(EVAL_KEYS)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    before = data_versions(platform, EVAL_KEYS[:4])
    report = asset_metadata(first, REPORT)
    # The shipped candidate is production's release: it passes its charter and does not regress against itself.
    checks = check_evaluations(first)
    assert checks[f"{REPORT.to_user_string()}:charter_thresholds"].passed, checks[f"{REPORT.to_user_string()}:charter_thresholds"].description
    assert checks[f"{REPORT.to_user_string()}:no_regression"].passed
    for figure in ("accuracy", "recall_at_k", "mrr", "ndcg_at_k", "groundedness", "refusal_correctness",
                   "latency_p50_ms", "latency_p95_ms", "cost_per_call", "production_accuracy", "delta_accuracy"):
        assert isinstance(report[figure], float | int), figure
    assert report["refusal_correctness"] == 1.0  # the unanswerable questions got "I don't know"
    assert report["conversation_pass_rate"] == 1.0  # the follow-up is resolved from the conversation
    assert report["accuracy_tier_none"] == 1.0  # ... and the refusals are the no-answer tier's
    html = Path(report["report"]).read_text()
    assert "Candidate and production" in html and "Golden conversations" in html

    # A prompt change: a new prompt version becomes the candidate's. Only the prompt registry's version changes.
    add_prompt_version(platform.config_dir, "v2")
    set_candidate(platform.config_dir, prompt_version="v2")
    second = platform.run(EVAL_KEYS)
    assert second.success
    after = data_versions(platform, EVAL_KEYS[:4])
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {PROMPTS.to_user_string(), CANDIDATE.to_user_string()}, (before, after)
    meta = asset_metadata(second, REPORT)
    assert meta["candidate_id"] != report["candidate_id"]
    assert "delta_accuracy" in meta and "production_latency_p95_ms" in meta
    html = Path(meta["report"]).read_text()
    assert "support-assistant-r1" in json.dumps(json.loads(Path(meta["report"]).with_suffix(".json").read_text())["production_release"])

    # `agenix eval` runs the same evaluation of the same candidate: the same figures (latency aside: timed anew).
    env = {**os.environ, "AGENIX_HOME": str(platform.home), "AGENIX_CONFIG_DIR": str(platform.config_dir),
           "AGENIX_LLM_URL": llm.base_url, "DAGSTER_HOME": str(platform.home / "dagster")}
    out = subprocess.run([sys.executable, "-m", "agenix_assets.cli", "eval", "--json"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = json.loads(out.stdout)
    assert printed["candidate_id"] == meta["candidate_id"]
    for figure in ("accuracy", "recall_at_k", "mrr", "ndcg_at_k", "refusal_correctness", "conversation_pass_rate",
                   "groundedness"):
        assert printed["candidate"][figure] == pytest.approx(meta[figure]), figure
    table = subprocess.run([sys.executable, "-m", "agenix_assets.cli", "eval", "--candidate", "prompt_version=v1"],
                           env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert "accuracy" in table.stdout and "PASS charter_thresholds" in table.stdout, table.stdout + table.stderr


def test_candidate_below_charter_fails_its_gate_with_metric_and_examples(platform, llm):
    small_suite(platform, answerable=3, paraphrases=0, conversations=0)
    add_prompt_version(platform.config_dir, "v9", answers="Please contact the service team.")
    set_candidate(platform.config_dir, prompt_version="v9", model="gemma-3-270m")
    # The candidate is Gemma alone: with its fallback the extractive tier would answer whatever Gemma's ungrounded
    # answer left, and the candidate would be as good as production.
    models = platform.config_dir / "gateway" / "models.yaml"
    text = models.read_text()
    gemma = text.index("  - name: gemma-3-270m")
    models.write_text(text[:gemma] + text[gemma:].replace("    fallbacks: [extractive]\n", "    fallbacks: []\n", 1))
    result = platform.run(EVAL_KEYS)
    checks = check_evaluations(result)
    gate = checks[f"{REPORT.to_user_string()}:charter_thresholds"]
    assert not gate.passed
    assert "accuracy" in gate.description
    assert "accuracy" in gate.metadata["failed_metrics"].value
    suite = yaml.safe_load((platform.landing / "_manifest" / "golden" / "support-assistant.yaml").read_text())
    examples = gate.metadata["examples"].value  # a table: id, question, expected, answer, tier
    assert any(f"| {item['id']} |" in examples for item in suite["items"] if item.get("answerable", True)), examples
    assert not checks[f"{REPORT.to_user_string()}:no_regression"].passed
    # Not published: the gate's verdict holds for any later reader.
    from agenix_assets.core import gates

    import duckdb

    with duckdb.connect(str(platform.warehouse)) as con:
        latest = gates.latest_evaluation(con, REPORT.to_user_string())
    assert {g.check: g.passed for g in latest} == {"charter_thresholds": False, "no_regression": False}




def test_a_sandbox_candidate_is_evaluated_beside_production_without_touching_it(platform, llm, tmp_path):
    """An engineer's prompt tried in a sandbox: its eval report has production's figures and deltas, and
    production's home gets no report, no candidate and no changed file."""
    from agenix_assets.sandbox import create_sandbox

    small_suite(platform, answerable=3, paraphrases=1, conversations=0)
    before = {p.relative_to(platform.home): p.stat().st_mtime_ns for p in platform.home.rglob("*") if p.is_file()}
    box = create_sandbox("prompt-trial", production_home=platform.home, config_dir=platform.config_dir,
                         directory=tmp_path / "sandboxes")
    add_prompt_version(box.config_dir, "v2")
    env = {**os.environ, **box.env(), "AGENIX_LLM_URL": llm.base_url}
    out = subprocess.run([sys.executable, "-m", "agenix_assets.cli", "eval", "--json"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = json.loads(out.stdout)
    assert printed["production"] is not None and "accuracy" in printed["deltas"]
    assert Path(printed["report"]).is_relative_to(box.root)
    report = json.loads(Path(printed["report"]).with_suffix(".json").read_text())
    assert report["candidate"]["release"]["prompt_version"] == "v2"
    assert report["production"]["release"]["prompt_version"] == "v1"
    after = {p.relative_to(platform.home): p.stat().st_mtime_ns for p in platform.home.rglob("*") if p.is_file()}
    assert after == before
