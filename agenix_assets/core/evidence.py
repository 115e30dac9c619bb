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

import contextlib
import datetime as dt
import hashlib
import html
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
# One look for the platform's reports: the evaluation report's stylesheet and number format.
from .eval_report import _CSS, HEADLINE, _fmt, delta_class
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
        "evaluation_passed": bool(evaluation.get("passed")) if evaluation and evaluation["concerns_release"] else None,
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


# ---------------------------------------------------------------- HTML

_PACK_CSS = _CSS + """
.badge{display:inline-block;padding:1px 8px;border-radius:3px;color:#fff;font-weight:600}
.ok{background:#176b2c} .bad{background:#b3261e} .na{background:#7a7f8c}
tr.failed td{background:#fdecea} tr.failed td.result{color:#b3261e;font-weight:600}
tr.this td:first-child{border-left:4px solid #2d5bd7} .marker{color:#2d5bd7;font-weight:600}
"""
# Longer evidence values (e.g. a verdict's example misses) are cut in the page; the JSON pack has them whole.
_EVIDENCE_VALUE_CHARS = 200


class _Html(str):
    """Already-escaped HTML."""


def _text(value: Any) -> str:
    """Any value as escaped text: None as a dash, booleans as yes/no, lists joined, dicts as key=value."""
    if isinstance(value, _Html):
        return value
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return _fmt(value)
    if isinstance(value, dict):
        return html.escape(_key_values(value))
    if isinstance(value, (list, tuple)):
        return html.escape(", ".join(v if isinstance(v, str) else json.dumps(v, default=str) for v in value))
    return html.escape(str(value))


def _key_values(evidence: Any) -> str:
    """Evidence as compact ``key=value`` pairs (unescaped; ``_text`` escapes)."""
    if not isinstance(evidence, dict):
        return "" if evidence is None else str(evidence)
    parts = []
    for k, v in evidence.items():
        shown = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
        if len(shown) > _EVIDENCE_VALUE_CHARS:
            shown = shown[:_EVIDENCE_VALUE_CHARS] + "… (whole in the JSON pack)"
        parts.append(f"{k}={shown}")
    return ", ".join(parts)


def _badge(ok: bool | None, yes: str, no: str, unknown: str = "not known") -> _Html:
    cls, label = ("na", unknown) if ok is None else ("ok", yes) if ok else ("bad", no)
    return _Html(f"<span class='badge {cls}'>{html.escape(label)}</span>")


def _table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None,
           numeric: frozenset[int] = frozenset()) -> str:
    if not rows:
        return "<p class='small'>none</p>"
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for n, row in enumerate(rows):
        cls = (classes or [""] * len(rows))[n]
        cells = "".join(f"<td class='num'>{_text(c)}</td>" if i in numeric else f"<td>{_text(c)}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr class='{html.escape(cls)}'>{cells}</tr>" if cls else f"<tr>{cells}</tr>")
    return f"<table><tr>{th}</tr>{''.join(body)}</table>"


def _result(passed: Any) -> _Html:
    return _Html("<span class='pass'>passed</span>" if passed else "<span class='fail'>FAILED</span>")


def _marker(concerns: Any) -> _Html:
    return _Html("<span class='marker'>◆ this release</span>" if concerns else "")


def _report_href(path: str, base_dir: Path | None) -> str:
    """A link to the evaluation report: relative to the pack's folder when it can be, so the two travel together."""
    p = Path(path)
    if p.is_absolute():
        if base_dir is None:
            return p.as_uri()
        return quote(Path(os.path.relpath(p, Path(base_dir).resolve())).as_posix())
    return quote(p.as_posix())  # ':' is quoted too, so no path becomes a javascript: or other scheme link


def _summary_section(pack: dict[str, Any]) -> str:
    s = pack["summary"]
    approved = "; ".join(f"{a['role']}: {a['by']} ({a['signed_at']})" for a in s["approved_by"])
    gates_line = (f"{s['gates_total']} evaluation(s), {s['gates_failed']} failed ({s['gate_checks_total']} check "
                  f"verdict(s), {s['gate_checks_failed']} failed); {s['gates_concerning_release']} verdict(s) "
                  "name this release")
    rows = [
        ["Evaluation of this release passed?", _badge(s["evaluation_passed"], "passed", "FAILED",
                                                       "no evaluation of this release")],
        ["Approvals complete?", _Html(_badge(s["approvals_complete"], "complete", "INCOMPLETE") + " " + _text(
            f"required: {', '.join(s['required_roles']) or 'none'}; missing: {', '.join(s['missing_roles']) or 'none'}"
        ))],
        ["Approved by", approved or None],
        ["Approvals that do not count", _Html(_badge(s["invalid_approvals"] == 0, "none",
                                                     f"{s['invalid_approvals']} invalid"))],
        ["DPIA", _Html(_badge(s["dpia_ok"], "ok", "MISSING") + " " + _text(
            f"{'required' if s['dpia_required'] else 'not required'}; reference {s['dpia_reference'] or 'none'}"))],
        ["Risk class", s["risk_class"]],
        ["First live in production", s["first_live_in_production"] or "never"],
        ["Live now in", ", ".join(s["currently_live_in"]) or "nowhere"],
        ["Gate verdicts", _Html(_badge(s["gates_failed"] == 0, "no failure", f"{s['gates_failed']} failed") + " "
                                + _text(gates_line))],
        ["Dagster checks failed", _Html(_badge(s["dagster_checks_failed"] == 0, "none",
                                               str(s["dagster_checks_failed"])) + " "
                                        + _text(f"of {len(pack['dagster_checks'])} recorded evaluation(s)"
                                                if pack["dagster_checks"] else "(Dagster's history not included)"))],
        ["Audit trail intact?", _badge(s["audit_trail_intact"], "intact", "BROKEN")],
        ["One content hash for the release?", _Html(_badge(s["release_hashes_consistent"], "yes", "NO") + " "
                                                    + _text(pack["release_hashes"]))],
    ]
    return "<h2>Summary</h2>" + _table(["question", "answer"], rows)


def _charter_section(c: dict[str, Any]) -> str:
    kpis = [f"{k['name']} {k['target']}" + (f" (baseline {k['baseline']})" if k.get("baseline") else "")
            for k in c.get("kpis") or []]
    rows = [["id", c.get("id")], ["name", c.get("name")], ["owner", c.get("owner")],
            ["business problem", c.get("business_problem")], ["target users", c.get("target_users")],
            ["KPIs", kpis], ["latency target p95 (ms)", c.get("latency_target_ms_p95")],
            ["uptime target (%)", c.get("uptime_target_percent")], ["data domains", c.get("data_domains")],
            ["sources", c.get("sources")], ["risk class", _Html(f"<b>{_text(c.get('risk_class'))}</b>")],
            ["DPIA reference", c.get("dpia_reference")], ["regulatory constraints", c.get("regulatory_constraints")],
            ["charter file", _Html(f"{_text(c.get('file'))} <code>sha256 {_text(c.get('file_sha256'))}</code>")]]
    out = ["<h2>Charter and risk class</h2>", _table(["field", "value"], rows), "<h3>Risk register</h3>"]
    out.append(_table(["id", "risk", "likelihood", "impact", "mitigation", "owner", "status"], [
        [r.get("id"), r.get("description"), r.get("likelihood"), r.get("impact"), r.get("mitigation"),
         r.get("owner"), r.get("status")] for r in c.get("risks") or []]))
    return "".join(out)


def _parts_section(pack: dict[str, Any]) -> str:
    parts = pack.get("release_parts") or {}
    rows = [[name, (p or {}).get("value"), _Html(f"<code>{_text((p or {}).get('hash'))}</code>")]
            for name, p in parts.items()]
    return (f"<h2>Release parts</h2><p>release {_text(pack['release'])}, content hash "
            f"<code>{_text(pack['summary']['release_hash'])}</code></p>" + _table(["part", "value", "hash"], rows))


def _sources_section(sources: list[dict[str, Any]]) -> str:
    rows, classes = [], []
    for s in sources:
        review = s.get("privacy_review_record")
        if isinstance(review, dict):
            shown = (f"{review.get('outcome')} by {review.get('reviewer')} ({review.get('role')}) on "
                     f"{review.get('decided_at')}" + (f"; conditions: {'; '.join(review['conditions'])}"
                                                      if review.get("conditions") else ""))
            review_cell = _Html(_text(shown) + " " + _badge(s.get("privacy_review_covers_source"), "covers it",
                                                            "DOES NOT COVER THIS SOURCE"))
        else:
            review_cell = _Html(f"<span class='fail'>{_text(review or NOT_RECORDED)}</span>")
        entry = s.get("processing_register_entry")
        register = (_Html(f"yes: {_text(entry.get('activities'))}, retention {_text(entry.get('retention_days'))} "
                          "days") if s.get("in_processing_register") and entry
                    else _Html("<span class='fail'>NOT IN THE REGISTER</span>"))
        name = s.get("name") if s.get("configured", True) else _Html(
            f"{_text(s.get('name'))} <span class='fail'>not configured in sources.yaml</span>")
        rows.append([name, s.get("kind"), s.get("owner"), s.get("data_domain"), s.get("data_categories"),
                     s.get("privacy_review"), review_cell, register])
        ok = isinstance(review, dict) and s.get("privacy_review_covers_source") and s.get("in_processing_register")
        classes.append("" if ok else "failed")
    return "<h2>Sources and privacy reviews</h2>" + _table(
        ["source", "kind", "owner", "data domain", "data categories", "privacy review", "review record",
         "processing register"], rows, classes)


def _approvals_section(pack: dict[str, Any]) -> str:
    req = pack.get("approval_requirement") or {}
    signed = {}
    for a in pack["approvals"]:
        signed.setdefault(a.get("role"), []).append(f"{a.get('by')} at {a.get('signed_at')}")
    missing = set(req.get("missing_roles") or [])
    roles = list(dict.fromkeys([*(req.get("required_roles") or []), *missing]))
    out = ["<h2>Approvals</h2>",
           f"<p>risk class {_text(req.get('risk_class'))}: required roles {_text(req.get('required_roles'))}; DPIA "
           f"{'required' if req.get('dpia_required') else 'not required'} (reference "
           f"{_text(req.get('dpia_reference'))})</p>"]
    out.append(_table(["required role", "status"], [
        [r, _Html("<span class='fail'>MISSING</span>") if r in missing or r not in signed
         else _Html("<span class='pass'>approved</span> by " + _text("; ".join(signed[r])))] for r in roles],
        ["failed" if r in missing or r not in signed else "" for r in roles]))
    header = ["seq", "role", "by", "approver id", "signed at", "recorded at", "note", "channel", "release hash",
              "signature"]
    out.append("<h3>Approvals recorded</h3>")
    out.append(_table(header, [
        [a.get("seq"), a.get("role"), a.get("by"), a.get("approver_id"), a.get("signed_at"), a.get("recorded_at"),
         a.get("note"), a.get("channel"), a.get("release_hash"), _Html("<span class='pass'>ok</span>")]
        for a in pack["approvals"]]))
    out.append("<h3>Approvals that do not count</h3>")
    invalid = pack["invalid_approvals"]
    out.append(_table(header[:-1] + ["problem"], [
        [a.get("seq"), a.get("role"), a.get("by"), a.get("approver_id"), a.get("signed_at"), a.get("recorded_at"),
         a.get("note"), a.get("channel"), a.get("release_hash"),
         _Html(f"<span class='fail'>{_text(a.get('problem'))}</span>")] for a in invalid], ["failed"] * len(invalid)))
    return "".join(out)


def _evaluation_section(ev: dict[str, Any] | None, base_dir: Path | None) -> str:
    out = ["<h2>Evaluation</h2>"]
    if not ev:
        return out[0] + "<p class='fail'>No evaluation report is in this pack.</p>"
    link = ""
    if ev.get("report_path"):
        href = html.escape(_report_href(str(ev["report_path"]), base_dir), quote=True)
        link = f" · <a href=\"{href}\">full evaluation report</a>"
    out.append(f"<p>candidate {_text(ev.get('candidate_id'))} (hash <code>{_text(ev.get('candidate_hash'))}</code>) "
               f"evaluated {_text(ev.get('evaluated_at'))} on golden suite {_text(ev.get('suite'))} (hash "
               f"{_text(ev.get('suite_hash'))}), against production release {_text(ev.get('production_release'))}: "
               f"{_result(ev.get('passed'))}{link}</p>")
    if not ev.get("concerns_release"):
        out.append("<p class='fail'>This evaluation is of another candidate, not of this release.</p>")
    out.append(_table(["check", "result", "why", "evidence"], [
        [v.get("check"), _result(v.get("passed")), v.get("description"), _key_values(v.get("evidence"))]
        for v in ev.get("verdicts") or []], ["" if v.get("passed") else "failed" for v in ev.get("verdicts") or []]))
    cs = ((ev.get("candidate") or {}).get("summary")) or {}
    ps = ((ev.get("production") or {}).get("summary")) or {}
    deltas = ev.get("deltas") or {}
    rows = []
    for m in HEADLINE:
        if m in cs or m in ps:
            d = (deltas.get(m) or {}).get("delta")
            rows.append([m, cs.get(m), ps.get(m) if ev.get("production") else None,
                         _Html(f"<span class='{delta_class(m, d)}'>{_text(d)}</span>")])
    out.append(_table(["figure", "candidate", "production", "delta"], rows, numeric=frozenset({1, 2})))
    return "".join(out)


def _verdict_classes(rows: list[dict[str, Any]]) -> list[str]:
    return [" ".join(c for c in ("" if r.get("passed") else "failed", "this" if r.get("concerns_release") else "")
                     if c) for r in rows]


def _gate_section(rows: list[dict[str, Any]]) -> str:
    return ("<h2>Gate history</h2><p class='small'>every blocking gate verdict of the use case in gates.evaluations, "
            "oldest first, failures and reruns included</p>" + _table(
                ["evaluated at", "asset", "check", "result", "published", "description", "evidence", "run",
                 "evaluation", "concerns"],
                [[r.get("evaluated_at"), r.get("asset"), r.get("check"), _result(r.get("passed")), r.get("published"),
                  r.get("description"), _key_values(r.get("evidence")), r.get("run_id"),
                  (r.get("evaluation_id") or "")[:12], _marker(r.get("concerns_release"))] for r in rows],
                _verdict_classes(rows)))


def _dagster_section(rows: list[dict[str, Any]]) -> str:
    return ("<h2>Dagster check history</h2><p class='small'>Dagster's own asset-check results (e.g. governance and "
            "dbt checks)</p>" + _table(
                ["evaluated at", "asset", "check", "result", "severity", "metadata", "run", "concerns"],
                [[r.get("evaluated_at"), r.get("asset"), r.get("check"), _result(r.get("passed")), r.get("severity"),
                  _key_values(r.get("metadata")), r.get("run_id"), _marker(r.get("concerns_release"))]
                 for r in rows],
                _verdict_classes(rows)))


def _deployment_section(pack: dict[str, Any]) -> str:
    release = pack["release"]
    events = pack["deployment_events"]
    out = ["<h2>Deployment timeline</h2>", _table(
        ["seq", "at", "environment", "stage", "release", "weight", "previous release", "actor", "reason", "run",
         "record hash"],
        [[e.get("seq"), e.get("at"), e.get("environment"), e.get("stage"), e.get("release"), e.get("weight"),
          e.get("previous_release"), e.get("actor"), e.get("reason"), e.get("run_id"),
          _Html(f"<code>{_text((e.get('hash') or '')[:16])}</code>")] for e in events],
        [" ".join(c for c in ("this" if e.get("release") == release else "",
                              "failed" if e.get("stage") == "rollback" else "") if c) for e in events])]
    windows = pack["release_windows"]
    out.append("<h2>Live windows: which version was live when</h2>")
    out.append(_table(
        ["environment", "slot", "release", "from", "to", "max weight", "moved in by", "why", "moved out by", "why"],
        [[w.get("environment"), w.get("slot"), w.get("release"), w.get("from"),
          w.get("to") or _Html("<b>still live</b>"), w.get("max_weight"), w.get("moved_in_by"),
          w.get("moved_in_reason"), w.get("moved_out_by"), w.get("moved_out_reason")] for w in windows],
        ["this" if w.get("release") == release else "" for w in windows]))
    return "".join(out)


def _audit_section(problems: list[str]) -> str:
    if not problems:
        return ("<h2>Audit-trail verification</h2><p>" + _badge(True, "intact", "")
                + " the verification of the ledgers found no problem.</p>")
    items = "".join(f"<li class='fail'>{html.escape(p)}</li>" for p in problems)
    return f"<h2>Audit-trail verification</h2><p>{_badge(False, '', 'BROKEN')}</p><ul>{items}</ul>"


def render_html(pack: dict[str, Any], base_dir: Path | None = None) -> str:
    """The pack as one self-contained page (no external CSS or JS; every value escaped), answers first.
    ``base_dir`` is where the page will be written, so an absolute report path becomes a relative link."""
    title = f"Audit evidence: {pack['release']} ({pack['use_case']})"
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_PACK_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
           f"<p class='small'>generated {_text(pack['generated_at'])} · evidence pack schema "
           f"{_text(pack['schema_version'])} · <span class='marker'>◆</span> marks what concerns this release</p>"]
    out.append(_summary_section(pack))
    out.append(_charter_section(pack.get("charter") or {}))
    out.append(_parts_section(pack))
    out.append(_sources_section(pack.get("sources") or []))
    out.append(_approvals_section(pack))
    out.append(_evaluation_section(pack.get("evaluation"), base_dir))
    out.append(_gate_section(pack["gate_history"]))
    out.append(_dagster_section(pack["dagster_checks"]))
    out.append(_deployment_section(pack))
    out.append(_audit_section(pack["audit_problems"]))
    out.append("</body></html>")
    return "".join(out)


# ---------------------------------------------------------------- files

_RELEASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _write_atomic(path: Path, text: str) -> None:
    """Write beside the target, fsync, then rename: a reader sees the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # as readable as the evaluation reports it sits beside
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_pack(pack: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``evidence-<release>.json`` and ``evidence-<release>.html`` into ``out_dir`` (created)."""
    release = pack["release"]
    if not _RELEASE_NAME.fullmatch(release):
        raise ValueError(f"release {release!r} cannot name a file (letters, digits, '.', '_' and '-' only)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"evidence-{release}.json", "html": out_dir / f"evidence-{release}.html"}
    _write_atomic(paths["json"], json.dumps(pack, indent=1, ensure_ascii=False) + "\n")
    _write_atomic(paths["html"], render_html(pack, base_dir=out_dir))
    return paths


def audit_trail_problems(home: Path) -> list[str]:
    """Every problem of the tamper-evident trail: the approval and approver ledgers (chains and signatures), the
    deployment ledger's chain, and any approval an approved-release bundle cites that the approval ledger no longer
    holds (its newest records deleted)."""
    from . import approvals as ap
    from . import deployment

    cited = []
    for path in sorted((Path(home) / "releases").glob("*/*.json")):
        with contextlib.suppress(OSError, ValueError):
            cited += [a["hash"] for a in json.loads(path.read_text(encoding="utf-8")).get("approvals", [])
                      if a.get("hash")]
    return ap.verify_audit(home, expected_heads={"approvals": cited}) + deployment.events_ledger(home).verify()


def use_case_of(home: Path, release: str) -> str:
    """Which use case a release belongs to: its evaluation report, else its deployment events or approvals."""
    found = sorted((Path(home) / "eval").glob(f"*/{release}/report.json")) if "/" not in release else []
    if found:
        return found[0].parent.parent.name
    from . import deployment
    from .approvals import approvals_ledger

    for e in deployment.events(home):
        if e.get("release") == release:
            return e["use_case"]
    for a in approvals_ledger(home).records():
        if a.get("release") == release:
            return a["use_case"]
    raise LookupError(f"release {release}: no evaluation report, deployment or approval of it under {home}")


def export_pack(*, home: Path, config_dir: Path, release: str, out: Path | None = None,
                con: duckdb.DuckDBPyConnection | None = None,
                dagster_checks: list[dict[str, Any]] = ()) -> dict[str, Path]:
    """Collect everything about ``release`` from where it lives (config/, the warehouse's gate verdicts, the
    approval and deployment ledgers, the evaluation report) and write the pack as JSON and HTML into ``out``
    (default AGENIX_HOME/audit/packs). The audit CLI and the audit_evidence_pack asset both call this."""
    from . import approvals as ap
    from . import deployment
    from .rollout import release_windows

    home, config_dir = Path(home), Path(config_dir)
    use_case = use_case_of(home, release)
    report_file = home / "eval" / use_case / release / "report.json"
    report = None
    if report_file.is_file():
        report = json.loads(report_file.read_text(encoding="utf-8"))
        report["report_path"] = str(report_file.with_name("report.html"))
    if con is None:
        from ..resources.warehouse import connect_waiting

        warehouse = home / "warehouse.duckdb"
        with contextlib.closing(connect_waiting(str(warehouse), read_only=True, timeout_s=60)) as own:
            history = collect_gate_history(own, use_case)
    else:
        history = collect_gate_history(con, use_case)
    policy = ap.load_approval_policy(config_dir)
    status = ap.approvals_for(home, release, policy)
    charter = collect_charter(config_dir, use_case)
    try:
        risk = deployment.read_bundle(home, use_case, release).get("risk_class") or charter["risk_class"]
    except deployment.DeploymentError:
        risk = charter["risk_class"]
    events = deployment.events(home, use_case)
    pack = build_pack(
        release=release, use_case=use_case, generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        charter=charter, sources=collect_sources(config_dir, use_case),
        release_parts=(report or {}).get("parts") or {}, gate_history=history,
        approvals=status.valid, invalid_approvals=[{**a, "problem": "; ".join(a.get("problems", []))}
                                                   for a in status.invalid],
        approval_requirement={"risk_class": risk, "required_roles": ap.required_roles(policy, risk),
                              "missing_roles": ap.missing_roles(policy, risk, status.valid),
                              "dpia_required": bool(getattr(policy.risk_classes, risk).dpia_required),
                              "dpia_reference": charter.get("dpia_reference")},
        eval_report=report, deployment_events=events, release_windows=release_windows(events),
        audit_problems=audit_trail_problems(home),
        dagster_checks=list(dagster_checks),
    )
    return write_pack(pack, Path(out) if out else home / "audit" / "packs")
