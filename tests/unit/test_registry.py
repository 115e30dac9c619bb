"""Registries (core/registry.py): governance metadata required, content hashes as versions, candidate resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agenix_assets.core import registry as core

UC = "support-assistant"


def _prompts(config_dir: Path) -> Path:
    return config_dir / "prompts" / "support-assistant.yaml"


def add_prompt_version(config_dir: Path, name: str, **changes) -> None:
    path = _prompts(config_dir)
    book = yaml.safe_load(path.read_text())
    version = {**book["versions"]["v1"], **changes}
    book["versions"][name] = version
    path.write_text(yaml.safe_dump(book, sort_keys=False))


def test_every_entry_has_owner_purpose_risk_and_a_16_hex_content_hash(config_dir: Path):
    r = core.load_registries(config_dir, UC)
    entries = [*r.models.entries, *r.prompts.entries, *r.retrieval.entries]
    assert set(r.models.names()) == {"extractive", "gemma-3-270m", "llama-3.1-8b-instruct", "all-minilm-l6-v2"}
    assert r.prompts.names() == ["v1"] and r.retrieval.names() == ["v1"]
    for e in entries:
        assert e.owner and e.purpose and e.risk_rating in {"low", "medium", "high"}
        assert len(e.content_hash) == 16 and int(e.content_hash, 16) >= 0
        assert e.content_hash == core.content_hash(json.loads(e.content))


def test_a_missing_owner_names_file_line_and_every_entry_that_lacks_it(config_dir: Path):
    path = config_dir / "gateway" / "models.yaml"
    text = path.read_text()
    # Drop gemma's and llama's owner lines; the first model keeps its own.
    lines = text.splitlines()
    owners = [i for i, line in enumerate(lines) if line.strip() == "owner: team:llm"]
    for i in reversed(owners[1:3]):
        del lines[i]
    path.write_text("\n".join(lines) + "\n")
    gemma_line = next(i for i, line in enumerate(lines, 1) if line.strip() == "- name: gemma-3-270m")
    with pytest.raises(core.RegistryError) as err:
        core.load_registries(config_dir, UC)
    message = str(err.value)
    assert f"{path}:{gemma_line}: model 'gemma-3-270m': missing owner" in message
    assert "model 'llama-3.1-8b-instruct': missing owner" in message
    assert "extractive" not in message


def test_a_prompt_version_without_risk_rating_is_named_with_its_line(config_dir: Path):
    add_prompt_version(config_dir, "v2", risk_rating=None)
    path = _prompts(config_dir)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("  v2:"))
    with pytest.raises(core.RegistryError, match=rf"{path}:{line}: prompt version 'v2': missing risk_rating"):
        core.load_prompt_registry(config_dir, UC)


def test_a_new_prompt_version_changes_only_the_prompt_registry(config_dir: Path):
    before = core.load_registries(config_dir, UC)
    add_prompt_version(config_dir, "v2", no_answer="Sorry, the knowledge base does not say.")
    after = core.load_registries(config_dir, UC)
    assert after.prompts.hash != before.prompts.hash
    assert after.prompts.hashes()["v1"] == before.prompts.hashes()["v1"]  # the YAML was rewritten, v1 is the same
    assert (after.models.hash, after.retrieval.hash) == (before.models.hash, before.retrieval.hash)


def test_governance_edit_changes_the_registry_hash_not_the_entry_hash(config_dir: Path):
    before = core.load_prompt_registry(config_dir, UC)
    path = _prompts(config_dir)
    path.write_text(path.read_text().replace("    owner: team:llm\n", "    owner: support-leads@example.com\n"))
    after = core.load_prompt_registry(config_dir, UC)
    assert after.get("v1").owner == "support-leads@example.com"
    assert after.hashes() == before.hashes() and after.hash != before.hash


def test_model_hash_does_not_depend_on_the_machines_environment(config_dir: Path, monkeypatch):
    here = core.load_model_registry(config_dir).hashes()
    monkeypatch.setenv("AGENIX_LLM_URL", "http://10.1.2.3:9000/v1")
    assert core.load_model_registry(config_dir).hashes() == here


def test_retrieval_hash_covers_gateway_top_k_but_not_index_retention(config_dir: Path):
    base = core.load_retrieval_registry(config_dir, UC).get("v1").content_hash
    rag = config_dir / "rag" / "support_assistant.yaml"
    rag.write_text(rag.read_text().replace("retention_versions: 3", "retention_versions: 5"))
    assert core.load_retrieval_registry(config_dir, UC).get("v1").content_hash == base
    gateway = config_dir / "gateway" / "gateway.yaml"
    gateway.write_text(gateway.read_text().replace("    top_k: 4\n", "    top_k: 6\n", 1))
    assert core.load_retrieval_registry(config_dir, UC).get("v1").content_hash != base


def resolve(config_dir: Path, servable=(1,), **candidate) -> core.Resolution:
    spec = core.ReleaseSpec(use_case=UC, candidate=core.CandidateSpec(**candidate))
    return core.resolve_candidate(core.load_registries(config_dir, UC), spec, list(servable))


def test_the_shipped_spec_resolves_to_the_production_tuple(config_dir: Path):
    spec = core.load_release_spec(config_dir, UC)
    got = core.resolve_candidate(core.load_registries(config_dir, UC), spec, [1, 2])
    c = got.candidate
    assert got.resolves and (c.model, c.prompt_version, c.index_version, c.retrieval_version) == ("auto", "v1", 2, "v1")
    assert c.candidate_id == f"{UC}-{c.candidate_hash[:8]}"
    assert c.release().model_dump(exclude_none=True) == {"name": c.candidate_id, "model": "auto", "prompt_version": "v1",
                                        "index_version": 2}


def test_a_prompt_version_that_does_not_exist_does_not_resolve(config_dir: Path):
    got = resolve(config_dir, prompt_version="v9")
    assert not got.resolves
    assert got.problems == [f"prompt version 'v9' does not exist in {_prompts(config_dir)} (versions: v1)"]
    assert got.candidate.prompt_hash == core.MISSING


def test_a_disabled_model_does_not_resolve(config_dir: Path):
    got = resolve(config_dir, model="llama-3.1-8b-instruct")
    assert not got.resolves
    assert "model 'llama-3.1-8b-instruct' is disabled in the model registry" in got.problems[0]


def test_a_model_whose_prompt_style_the_version_lacks_does_not_resolve(config_dir: Path):
    add_prompt_version(config_dir, "v2", completion=None)  # chat only
    got = resolve(config_dir, model="gemma-3-270m", prompt_version="v2")
    [problem] = got.problems
    assert problem.startswith(f"model 'gemma-3-270m' needs a 'completion' prompt, prompt version 'v2' has only chat "
                              f"({_prompts(config_dir)}:")


def test_an_index_version_that_is_not_servable_does_not_resolve(config_dir: Path):
    pinned = resolve(config_dir, index_version=3)
    assert pinned.problems == ["index version 3 of support-assistant is not servable (servable: [1])"]
    live = resolve(config_dir, servable=())
    assert not live.resolves and live.candidate.index_version == -1 and "no servable index version" in live.problems[0]


def test_a_release_spec_for_another_use_case_is_refused_with_its_line(config_dir: Path):
    path = core.release_spec_path(config_dir, UC)
    path.write_text(path.read_text().replace("use_case: support-assistant", "use_case: billing-bot"))
    with pytest.raises(core.RegistryError, match=rf"{path}:\d+: use_case: expected 'support-assistant'"):
        core.load_release_spec(config_dir, UC)


def test_check_config_names_a_registry_entry_without_governance(config_dir: Path):
    from typer.testing import CliRunner

    from agenix_assets.cli import app

    rag = config_dir / "rag" / "support_assistant.yaml"
    rag.write_text(rag.read_text().replace("risk_rating: medium\n", ""))
    bad = CliRunner().invoke(app, ["check-config", "--config-dir", str(config_dir)])
    assert bad.exit_code == 1
    assert f"{rag}:" in bad.output and "retrieval config 'v1': missing risk_rating" in bad.output
