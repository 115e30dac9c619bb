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
    risks = [r.model_dump(mode="json") for r in load_yaml_model(risk_file, RiskRegister).risks
             if r.use_case == use_case]
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
            "privacy_review_covers_source": bool(review and review.source == name
                                                 and review.outcome in APPROVED_OUTCOMES),
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


# ---------------------------------------------------------------- the pack

# A serving window in one of these environments is not "live in production" (a staging deployment serves testers).
NON_PRODUCTION_ENVIRONMENTS = frozenset({"staging"})
# What the pack keeps of a report.json: everything but the per-question records (the report beside it has them).
_EVAL_KEYS = ("use_case", "candidate_id", "candidate_hash", "parts", "evaluated_at", "suite", "suite_hash", "items",
              "conversations", "command", "production_release", "deltas", "verdicts", "passed", "report_path")
_RUN_KEYS = ("label", "release", "identity", "index_version", "summary", "seconds")


def _instant(value: Any) -> dt.datetime | None:
    """An ISO timestamp as an aware datetime (naive = UTC), so windows written with different offsets order right."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _mentions(value: Any, tokens: list[str]) -> bool:
    """Whether any string (or key) anywhere in ``value`` contains one of ``tokens`` as a whole word: the release
    ``support-assistant-r1`` is not mentioned by ``support-assistant-r10``."""
    if isinstance(value, str):
        return any(_whole_word(value, t) for t in tokens)
    if isinstance(value, dict):
        return any(_mentions(k, tokens) or _mentions(v, tokens) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_mentions(v, tokens) for v in value)
    return False


def _whole_word(text: str, token: str) -> bool:
    start = text.find(token)
    while start != -1:
        end = start + len(token)
        before = text[start - 1] if start else ""
        after = text[end] if end < len(text) else ""
        if not before.isalnum() and not after.isalnum():
            return True
        start = text.find(token, start + 1)
    return False


def _release_hashes(release: str, eval_report: dict[str, Any] | None, approvals: list[dict[str, Any]],
                    deployment_events: list[dict[str, Any]]) -> list[str]:
    """Every content hash the evidence gives for ``release``, most authoritative first (the evaluated candidate,
    then what approvals signed, then what was deployed). More than one means they did not judge the same thing."""
    found: list[str] = []
    if eval_report and eval_report.get("candidate_id") == release:
        found.append(eval_report.get("candidate_hash") or "")
    found += [a.get("release_hash") or "" for a in approvals if a.get("release") == release]
    found += [e.get("release_hash") or "" for e in deployment_events if e.get("release") == release]
    return [h for h in dict.fromkeys(found) if h]


def _evaluation(eval_report: dict[str, Any] | None, release: str) -> dict[str, Any] | None:
    if not eval_report:
        return None
    out = {k: eval_report[k] for k in _EVAL_KEYS if k in eval_report}
    for side in ("candidate", "production"):
        run = eval_report.get(side)
        out[side] = {k: run[k] for k in _RUN_KEYS if k in run} if run else None
    out["concerns_release"] = eval_report.get("candidate_id") == release
    return out


def _first_live_in_production(windows: list[dict[str, Any]], release: str) -> str | None:
    served = [w for w in windows if w.get("release") == release and w.get("slot") == "serving"
              and w.get("environment") not in NON_PRODUCTION_ENVIRONMENTS and w.get("from")]
    dated = [(i, w["from"]) for w in served if (i := _instant(w["from"])) is not None]
    return min(dated)[1] if dated else None


def build_pack(*, release: str, use_case: str, generated_at: str, charter: dict[str, Any],
               sources: list[dict[str, Any]], release_parts: dict[str, Any], gate_history: list[dict[str, Any]],
               approvals: list[dict[str, Any]], invalid_approvals: list[dict[str, Any]],
               approval_requirement: dict[str, Any], eval_report: dict[str, Any] | None,
               deployment_events: list[dict[str, Any]], release_windows: list[dict[str, Any]],
               audit_problems: list[str], dagster_checks: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """The evidence pack (schema_version 1): what the collectors and the ledgers gave, plus the answers a reviewer
    asks first (``summary``) and, on each gate verdict and Dagster check, whether it concerns this release (its
    evidence names the release id or one of its hashes). The result is plain JSON (it round-trips through
    ``json``), so the file written and the pack in memory are the same thing."""
    hashes = _release_hashes(release, eval_report, approvals, deployment_events)
    tokens = [release, *hashes]
    gate_rows = [{**g, "concerns_release": _mentions(g.get("evidence"), tokens)} for g in gate_history]
    check_rows = [{**c, "concerns_release": _mentions(c.get("metadata"), tokens)} for c in dagster_checks]
    evaluation = _evaluation(eval_report, release)
    evaluations = {g.get("evaluation_id") for g in gate_rows}
    failed_evaluations = {g.get("evaluation_id") for g in gate_rows if not g.get("passed")}
    missing = list(approval_requirement.get("missing_roles") or [])
    dpia_required = bool(approval_requirement.get("dpia_required"))
    dpia_reference = approval_requirement.get("dpia_reference") or charter.get("dpia_reference")
    summary = {
        "release": release,
        "use_case": use_case,
        "release_hash": hashes[0] if hashes else None,
        "release_hashes_consistent": len(hashes) <= 1,
        "risk_class": charter.get("risk_class") or approval_requirement.get("risk_class"),
        # None: no evaluation of this release is in the pack (none given, or one of another candidate).
        "evaluation_passed": bool(evaluation["passed"]) if evaluation and evaluation["concerns_release"] else None,
        "approvals_complete": not missing,
        "required_roles": list(approval_requirement.get("required_roles") or []),
        "missing_roles": missing,
        "approved_by": [{"role": a.get("role"), "by": a.get("by"), "signed_at": a.get("signed_at")}
                        for a in approvals],
        "invalid_approvals": len(invalid_approvals),
        "dpia_required": dpia_required,
        "dpia_reference": dpia_reference,
        "dpia_ok": not dpia_required or bool(dpia_reference),
        "first_live_in_production": _first_live_in_production(release_windows, release),
        "currently_live_in": [f"{w.get('environment')}/{w.get('slot')}" for w in release_windows
                              if w.get("release") == release and w.get("to") is None],
        "gates_total": len(evaluations),
        "gates_failed": len(failed_evaluations),
        "gate_checks_total": len(gate_rows),
        "gate_checks_failed": sum(1 for g in gate_rows if not g.get("passed")),
        "gates_concerning_release": sum(1 for g in gate_rows if g["concerns_release"]),
        "dagster_checks_failed": sum(1 for c in check_rows if not c.get("passed")),
        "audit_trail_intact": not audit_problems,
    }
    pack = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": generated_at,
        "release": release,
        "use_case": use_case,
        "release_hashes": hashes,
        "summary": summary,
        "charter": charter,
        "release_parts": release_parts,
        "sources": sources,
        "approval_requirement": approval_requirement,
        "approvals": approvals,
        "invalid_approvals": invalid_approvals,
        "evaluation": evaluation,
        "gate_history": gate_rows,
        "dagster_checks": check_rows,
        "deployment_events": deployment_events,
        "release_windows": release_windows,
        "audit_problems": list(audit_problems),
    }
    # Datetimes, paths and tuples a caller passed become their JSON form here, not only in the written file.
    return json.loads(json.dumps(pack, default=str))
