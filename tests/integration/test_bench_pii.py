"""The out-of-distribution PII benchmark: its generator, its "no part survives" scoring, and a small run end to end
through the CLI with the product's real redactor (Presidio, the packaged spaCy NER)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agenix_assets.cli import app
from agenix_assets.core.pii import PiiSpan
from agenix_bench import pii as bench


def _record(text: str, planted: list[tuple[str, str, str]]) -> bench.Record:
    """A mixed record whose planted values (type, form, value) are located in ``text``."""
    rows = []
    for typ, form, value in planted:
        start = text.index(value)
        parts = [(start + a, start + b) for a, b in bench.value_parts(typ, value)]
        rows.append(bench.Planted(typ, start, start + len(value), value, "pl_PL", form, parts))
    return bench.Record("r1", "test", "pl_PL", "mixed", text, rows)


def _span(text: str, surface: str, typ: str) -> PiiSpan:
    start = text.index(surface)
    return PiiSpan(typ, start, start + len(surface), surface, 0.9, "test")


def test_a_name_whose_surname_survives_is_a_miss() -> None:
    text = "I spoke to Agnieszka Kowalczyk yesterday."
    record = _record(text, [("PERSON", "", "Agnieszka Kowalczyk")])
    only_first = bench.score([record], [[_span(text, "Agnieszka", "PERSON")]])
    whole = bench.score([record], [[_span(text, "Agnieszka Kowalczyk", "PERSON")]])
    assert only_first["per_type"]["PERSON"]["recall"] == 0.0
    assert only_first["misses"][0]["survived"] == ["Kowalczyk"]
    assert whole["per_type"]["PERSON"]["recall"] == 1.0
    assert whole["precision"] == 1.0


def test_a_phone_number_whose_last_groups_survive_is_a_miss() -> None:
    text = "Call +48 577 932 040 after nine."
    record = _record(text, [("PHONE_NUMBER", "international", "+48 577 932 040")])
    partial = bench.score([record], [[_span(text, "+48 577", "PHONE_NUMBER")]])
    assert partial["per_type"]["PHONE_NUMBER/international"]["recall"] == 0.0
    assert partial["misses"][0]["survived"] == ["932", "040"]
    # the country code alone identifies nobody: leaving "+48" is still a catch
    rest = bench.score([record], [[_span(text, "577 932 040", "PHONE_NUMBER")]])
    assert rest["per_type"]["PHONE_NUMBER/international"]["recall"] == 1.0


def test_a_span_on_pii_free_text_lowers_precision() -> None:
    text = "The AquaFlow 3000 arrived in Lake Christian on Monday."
    record = bench.Record("c1", "test", "en_US", "clean", text, [])
    report = bench.score([record], [[_span(text, "Lake Christian", "PERSON")]])
    assert report["precision"] == 0.0
    assert report["false_positives_in_clean_texts"] == 1


def test_generation_is_deterministic_per_seed_and_covers_locales_and_types() -> None:
    # 16 tickets a locale: every one of the 16 templates once per locale
    first = bench.generate_ood("held_out", tickets_per_locale=16, clean_per_locale=2)
    again = bench.generate_ood("held_out", tickets_per_locale=16, clean_per_locale=2)
    other = bench.generate_ood("held_out", tickets_per_locale=2, clean_per_locale=0, seed=5)
    assert [r.text for r in first] == [r.text for r in again]
    assert not {r.text for r in first} & {r.text for r in other}

    locales = {r.locale for r in first}
    assert len(locales) >= 10
    rows = {p.row for r in first for p in r.planted}
    assert rows == {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER/national", "PHONE_NUMBER/international",
                    "IBAN_CODE", "CREDIT_CARD", "STREET_ADDRESS"}
    for record in first:
        if record.kind == "clean":
            assert record.planted == []
        for p in record.planted:
            assert record.text[p.start:p.end] == p.text
            assert p.parts and all(p.start <= a < b <= p.end for a, b in p.parts)
    for locale in locales:
        assert {p.row for r in first if r.locale == locale for p in r.planted} == rows


def test_generation_does_not_depend_on_the_hash_seed() -> None:
    """Two processes with different PYTHONHASHSEED make the same split (Faker draws some values from sets)."""
    code = ("from agenix_bench import pii as b; import hashlib; "
            "print(hashlib.sha1('|'.join(r.text for r in b.generate_ood('held_out', 6, 1)).encode()).hexdigest())")
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}, cwd=Path(__file__).parents[2]).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_dev_and_held_out_share_no_template_or_seed() -> None:
    dev, held = bench.SPLITS["dev"], bench.SPLITS["held_out"]
    assert dev.seed != held.seed
    assert not set(dev.pii_templates) & set(held.pii_templates)
    assert not set(dev.clean_templates) & set(held.clean_templates)
    assert set(held.locales) - set(dev.locales) == set(bench.HELD_OUT_ONLY_LOCALES)


@pytest.mark.timeout(120)
def test_cli_runs_the_ood_benchmark_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "pii-ood.json"
    result = CliRunner().invoke(app, ["bench", "pii", "--ood", "--tickets-per-locale", "2", "--json", str(out)])
    assert result.exit_code in (0, 1), result.output  # 1: a two-ticket sample may miss a target
    assert "recall PERSON" in result.output and "precision" in result.output
    report = json.loads(out.read_text())
    for split in ("dev", "held_out"):
        configs = report["splits"][split]["configurations"]
        assert set(configs) == {"blank", "ner"}
        for figures in configs.values():
            assert figures["texts"] > 0 and figures["texts_per_second"] > 0
            assert 0.0 <= figures["precision"] <= 1.0
            for row in ("PERSON", "EMAIL_ADDRESS", "IBAN_CODE", "PHONE_NUMBER/national"):
                assert figures["per_type"][row]["planted"] > 0
                assert 0.0 <= figures["per_type"][row]["recall"] <= 1.0
    # structured values in clean formats are caught by the product's redactor even on two tickets a locale
    assert report["splits"]["dev"]["configurations"]["ner"]["per_type"]["EMAIL_ADDRESS"]["recall"] >= 0.9
