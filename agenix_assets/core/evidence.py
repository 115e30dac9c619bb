"""The audit evidence pack of one release: who approved what, which version was live when, and on what evidence.

A compliance reviewer answers those questions from the pack alone (a JSON file and a self-contained HTML page), so
the pack copies what it cites instead of pointing at files that may change: the use case's charter and risk class,
each source with its privacy review and its place in the processing register, the release's parts and hashes,
every approval (and every approval that did not count, with why), the evaluation's figures and verdicts, every
blocking gate verdict the warehouse holds for the use case (failures and reruns included), Dagster's own check
history, every deployment event and the live windows of every release, and whether the hash-chained ledgers verify.

Collectors only read; ``build_pack`` is a pure function of what they return, so a pack can be rebuilt and compared.
No Dagster import.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import duckdb

from . import gates
from .config import (
    ConfigError,
    PrivacyReviewsFile,
    ProcessingRegister,
    RiskRegister,
    SourcesFile,
    UseCaseCharter,
    config_files,
    load_yaml_model,
)
from .governance import APPROVED_OUTCOMES

SCHEMA_VERSION = 1
NOT_RECORDED = "NOT RECORDED"
GATE_SOURCE = "gates.evaluations"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- collectors (pure reads)


def _charter_file(config_dir: Path, use_case: str) -> tuple[Path, UseCaseCharter]:
    folder = config_files(Path(config_dir))["use_cases"]
    if not folder.is_dir():
        raise ConfigError(f"{folder}: folder of use-case charters not found")
    for path in sorted(folder.glob("*.yaml")):
        charter = load_yaml_model(path, UseCaseCharter)
        if charter.id == use_case:
            return path, charter
    raise ConfigError(f"{folder}: no charter with id '{use_case}'")


def collect_charter(config_dir: Path, use_case: str) -> dict[str, Any]:
    """The use case's charter as its file states it, the file and its sha256 (which version of the charter the
    release was judged against), and the risk register's entries for the use case."""
    path, charter = _charter_file(config_dir, use_case)
    risk_file = config_files(Path(config_dir))["risk_register"]
    risks = [r.model_dump(mode="json") for r in load_yaml_model(risk_file, RiskRegister).risks if r.use_case == use_case]
    return {**charter.model_dump(mode="json"), "file": str(path), "file_sha256": _sha256(path),
            "risks": risks, "risk_register_file": str(risk_file)}


def collect_sources(config_dir: Path, use_case: str) -> list[dict[str, Any]]:
    """Each source the charter names, with its privacy review's record (or NOT_RECORDED) and its entry in the
    processing register (or None). A source the charter names but sources.yaml does not configure is listed with
    ``configured`` false rather than dropped: the reviewer must see the gap."""
    files = config_files(Path(config_dir))
    _, charter = _charter_file(config_dir, use_case)
    configured = {s.name: s for s in load_yaml_model(files["sources"], SourcesFile).sources}
    reviews = {r.id: r for r in load_yaml_model(files["privacy_reviews"], PrivacyReviewsFile).reviews}
    register = load_yaml_model(files["processing_register"], ProcessingRegister)
    out = []
    for name in charter.sources:
        src = configured.get(name)
        ref = src.privacy_review if src else None
        review = reviews.get(ref) if ref else None
        entry = register.sources.get(name)
        out.append({
            "name": name,
            "configured": src is not None,
            "description": src.description if src else None,
            "kind": src.kind if src else None,
            "owner": src.owner if src else None,
            "data_domain": src.data_domain if src else None,
            "data_categories": list(src.data_categories) if src else [],
            "privacy_review": ref,
            "privacy_review_record": review.model_dump(mode="json") if review else NOT_RECORDED,
            # A review filed for another source, or one that was rejected, does not cover this source.
            "privacy_review_covers_source": bool(review and review.source == name and review.outcome in APPROVED_OUTCOMES),
            "in_processing_register": entry is not None,
            "processing_register_entry": entry.model_dump(mode="json") if entry else None,
        })
    return out


def _iso_utc(value: Any) -> str:
    """gates.evaluations stores naive UTC timestamps; the pack states the offset."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    return str(value)


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table]).fetchone()[0])


def collect_gate_history(con: duckdb.DuckDBPyConnection, use_case: str) -> list[dict[str, Any]]:
    """Every check of every evaluation of the use case's gated assets, oldest first: failures and the reruns that
    followed them included, so the pack shows what was refused and not only what finally passed. Reads only (works
    on a read-only connection; an absent table is an empty history)."""
    if not _table_exists(con, gates.SCHEMA, gates.TABLE.split(".", 1)[1]):
        return []
    prefix = use_case.replace("-", "_") + "/"
    rows = con.execute(
        f"""SELECT evaluation_id, asset, check_name, passed, description, evidence, run_id, evaluated_at, published
            FROM {gates.TABLE} WHERE starts_with(asset, ?) ORDER BY evaluated_at, rowid""",
        [prefix],
    ).fetchall()
    out = []
    for evaluation_id, asset, check, passed, description, evidence, run_id, at, published in rows:
        try:
            parsed = json.loads(evidence) if evidence else {}
        except json.JSONDecodeError:
            parsed = evidence  # kept verbatim: evidence is never dropped
        out.append({"evaluation_id": evaluation_id, "asset": asset, "check": check, "passed": bool(passed),
                    "description": description or "", "evidence": parsed, "run_id": run_id or "",
                    "evaluated_at": _iso_utc(at), "published": bool(published), "source": GATE_SOURCE})
    return out
