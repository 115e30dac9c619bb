"""What an evaluation decides and shows: the charter's thresholds, the no-regression rule, the HTML report.

No Dagster import; works on the plain dicts ``serving.evaluation.EvalRun.to_json`` produces, so the eval_report
asset and ``agenix eval`` render and judge the same way.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from .config import ConfigError, Strict, UseCaseCharter, load_yaml_model
from .evaluation import LOWER_IS_BETTER, regressions

CHARTER_THRESHOLDS = "charter_thresholds"
NO_REGRESSION = "no_regression"
EVAL_GATES = (CHARTER_THRESHOLDS, NO_REGRESSION)

# The headline figures, in the order the report and `agenix eval` show them.
HEADLINE = ("accuracy", "accuracy_answerable", "recall_at_k", "mrr", "ndcg_at_k", "groundedness",
            "refusal_correctness", "conversation_pass_rate", "pii_leak_rate", "latency_p50_ms", "latency_p95_ms",
            "tokens_in_per_call", "tokens_out_per_call", "cost_per_call")


class Tolerance(Strict):
    """How much worse than production a candidate may be before ``no_regression`` fails. Absolute for ratios,
    relative (a fraction of production's figure) for latency and cost."""

    accuracy: float = Field(0.02, ge=0)
    recall_at_k: float = Field(0.02, ge=0)
    mrr: float = Field(0.05, ge=0)
    groundedness: float = Field(0.05, ge=0)
    refusal_correctness: float = Field(0.1, ge=0)
    conversation_pass_rate: float = Field(0.2, ge=0)
    pii_leak_rate: float = Field(0.0, ge=0)
    latency_p95_ms: float = Field(0.25, ge=0)  # relative
    cost_per_call: float = Field(0.25, ge=0)  # relative



class UseCaseEvaluation(Strict):
    golden_set: str  # relative to config/; the sample company's own golden set wins while it is in the landing zone
    tolerance: Tolerance = Tolerance()


class EvaluationSettings(Strict):
    use_cases: dict[str, UseCaseEvaluation] = Field(min_length=1)


def load_evaluation_settings(config_dir: Path) -> EvaluationSettings:
    return load_yaml_model(Path(config_dir) / "evaluation.yaml", EvaluationSettings)


_TARGET = re.compile(r"^\s*(>=|<=|>|<|=)?\s*([0-9]+(?:\.[0-9]+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Threshold:
    metric: str
    op: str  # ">=" or "<="
    value: float
    source: str  # where it comes from, for the check's description

    def holds(self, figure: float | None) -> bool:
        if figure is None:
            return False
        return figure >= self.value if self.op == ">=" else figure <= self.value


def charter_thresholds(charter: UseCaseCharter, where: str = "charter") -> list[Threshold]:
    """The charter's answer-accuracy KPI (a ratio, e.g. ">= 0.85") and its p95 latency target."""
    out: list[Threshold] = []
    for kpi in charter.kpis:
        if "accuracy" not in kpi.name.lower():
            continue
        m = _TARGET.match(kpi.target)
        if not m:
            raise ConfigError(f"{where}: kpi {kpi.name!r}: target {kpi.target!r} is not a comparison like '>= 0.85'")
        op = "<=" if (m.group(1) or ">=").startswith("<") else ">="
        value = float(m.group(2)) / (100 if m.group(3) else 1)
        out.append(Threshold("accuracy", op, value, f"charter KPI {kpi.name!r} {kpi.target}"))
    if charter.latency_target_ms_p95:
        out.append(Threshold("latency_p95_ms", "<=", float(charter.latency_target_ms_p95),
                             f"charter latency_target_ms_p95 {charter.latency_target_ms_p95}"))
    return out


@dataclass
class Verdict:
    check: str
    passed: bool
    description: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _ok(r: dict[str, Any]) -> bool:
    return bool(r.get("passed")) if r.get("kind") == "turn" else r.get("correct") is not False


def _failures(records: list[dict[str, Any]], limit: int = 5) -> list[dict[str, Any]]:
    return [{"id": r["id"] + (f"#{r['turn'] + 1}" if r.get("kind") == "turn" else ""), "question": r["question"],
             "expected": r.get("expected_facts") or [], "answer": r["answer"], "tier": r.get("tier"),
             "problems": r.get("failures", [])}
            for r in records if not _ok(r)][:limit]


def judge_thresholds(summary: dict[str, Any], records: list[dict[str, Any]], thresholds: list[Threshold]) -> Verdict:
    failed = [t for t in thresholds if not t.holds(summary.get(t.metric))]
    parts = [f"{t.metric} {summary.get(t.metric)} {t.op} {t.value} ({t.source})" for t in thresholds]
    if failed:
        desc = "failed: " + "; ".join(f"{t.metric} = {summary.get(t.metric)} (needs {t.op} {t.value})" for t in failed)
    else:
        desc = "met: " + "; ".join(parts) if parts else "the charter sets no evaluation threshold"
    evidence: dict[str, Any] = {t.metric: summary.get(t.metric) for t in thresholds}
    evidence.update({f"{t.metric}_threshold": t.value for t in thresholds})
    evidence["failed_metrics"] = [t.metric for t in failed]
    if failed:
        evidence["examples"] = _failures(records)
    return Verdict(CHARTER_THRESHOLDS, not failed, desc, evidence)


def judge_regression(deltas: dict[str, dict[str, Any]] | None, tolerance: Tolerance,
                     records: list[dict[str, Any]], production_records: list[dict[str, Any]] | None) -> Verdict:
    """``no_regression``: no figure the tolerance names is worse than production's beyond it (direction-aware;
    relative for latency and cost). Per-tier accuracies are shown, not judged: a routing change moves them."""
    if deltas is None:
        return Verdict(NO_REGRESSION, True, "no release in production to compare with", {"compared": False})
    tol = tolerance.model_dump()
    found = regressions({m: d for m, d in deltas.items() if m in tol}, tol)
    evidence: dict[str, Any] = {"compared": True, "regressed_metrics": [r["metric"] for r in found]}
    if found:
        desc = "regressed beyond tolerance: " + "; ".join(
            f"{r['metric']} {r['candidate']:.4g} vs production {r['production']:.4g} (tolerance {r['tolerance']})"
            for r in found)
        evidence["regressions"] = found
        # Questions production answered right and the candidate does not.
        right = {r["id"] for r in production_records or [] if _ok(r)}
        evidence["examples"] = _failures([r for r in records if r["id"] in right])
        return Verdict(NO_REGRESSION, False, desc, evidence)
    return Verdict(NO_REGRESSION, True, "no figure worse than production beyond tolerance", evidence)


# ---------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#1d2330}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #dde}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #dde;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f8} .num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#176b2c;font-weight:600} .fail{color:#b3261e;font-weight:600} .better{color:#176b2c} .worse{color:#b3261e}
.small{color:#667;font-size:.9em} code{background:#f3f4f8;padding:0 3px}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="num">{_fmt(c)}</td>' if i in numeric else f"<td>{c if isinstance(c, _Raw) else _fmt(c)}</td>"
        for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def delta_class(metric: str, delta: float | None) -> str:
    if not delta:
        return ""
    better = delta < 0 if metric in LOWER_IS_BETTER else delta > 0
    return "better" if better else "worse"


def _rid(r: dict[str, Any]) -> str:
    return r["id"] + (f"#{r['turn'] + 1}" if r.get("kind") == "turn" else "")


def _counts(records: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        if r.get("kind") == "turn" or r.get("correct") is None:
            continue
        if key == "accuracy_by_tier":
            g = str(r.get("tier") or "none")
        elif r.get("answerable", True):
            g = f"{r.get('split', 'dev')}_{r.get('phrasing', 'generator')}"
        else:
            continue
        out[g] = out.get(g, 0) + 1
    return out


def render_html(report: dict[str, Any]) -> str:
    """The report of one evaluation: verdicts, headline figures beside production's with deltas, accuracy per tier
    and per split/phrasing, every miss with its answer, conversations, and what was evaluated."""
    cand, prod = report["candidate"], report.get("production")
    cs, ps = cand["summary"], (prod or {}).get("summary") or {}
    deltas = report.get("deltas") or {}
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>Eval report {html.escape(report['candidate_id'])}"
           f"</title><style>{_CSS}</style></head><body>"]
    out.append(f"<h1>Evaluation of {html.escape(report['candidate_id'])} ({html.escape(report['use_case'])})</h1>")
    out.append(f"<p class='small'>{html.escape(report['evaluated_at'])} · golden suite {html.escape(report['suite'])} "
               f"(hash {html.escape(report['suite_hash'])}, {report['items']} questions, {report['conversations']} "
               f"conversations) · {html.escape(report.get('command', ''))}</p>")
    out.append("<h2>Gates</h2>")
    out.append(_table(["check", "result", "why"], [
        [v["check"], _Raw(f"<span class='{'pass' if v['passed'] else 'fail'}'>{'passed' if v['passed'] else 'FAILED'}</span>"),
         v["description"]] for v in report["verdicts"]]))
    out.append("<h2>Candidate and production</h2>")
    rows = []
    for m in HEADLINE:
        if m not in cs and m not in ps:
            continue
        d = (deltas.get(m) or {}).get("delta")
        rows.append([m, cs.get(m), ps.get(m) if prod else None,
                     _Raw(f"<span class='{delta_class(m, d)}'>{_fmt(d)}</span>") if d is not None else "–"])
    out.append(_table(["figure", "candidate", "production", "delta"], rows, {1, 2}))
    out.append(_table(["", "model", "prompt version", "index version", "parts (content hashes)"], [
        [lbl, r["release"]["model"], r["release"]["prompt_version"], r.get("index_version"),
         _Raw("<code>" + html.escape(", ".join(f"{k} {v}" for k, v in ((r.get("identity") or {}).get("parts") or {}).items())) + "</code>")]
        for lbl, r in (("candidate", cand), ("production", prod)) if r]))
    for title, key in (("Accuracy by answer tier", "accuracy_by_tier"),
                       ("Accuracy by split and phrasing (answerable questions)", "accuracy_by_split_phrasing")):
        c_groups, p_groups = cs.get(key) or {}, ps.get(key) or {}
        groups = sorted(set(c_groups) | set(p_groups))
        if groups:
            cn = _counts(cand["records"], key)
            pn = _counts(prod["records"], key) if prod else {}
            out.append(f"<h2>{title}</h2>")
            out.append(_table(["group", "candidate", "n", "production", "n"], [
                [g, c_groups.get(g), cn.get(g), p_groups.get(g), pn.get(g)] for g in groups], {1, 2, 3, 4}))
    misses = [r for r in cand["records"] if not _ok(r)]
    out.append(f"<h2>Misses of the candidate ({len(misses)})</h2>")
    out.append(_table(["id", "question", "expected", "answer", "tier", "retrieved"], [
        [_rid(r), r["question"] + (f" → {r['query']}" if r.get("rewritten") else ""),
         "; ".join(r.get("expected_facts") or []) or ("(refuse)" if r.get("answerable") is False else ""),
         r["answer"] + ("" if not r.get("failures") else f" [{'; '.join(r['failures'])}]"), r.get("tier"),
         ", ".join(dict.fromkeys(r.get("retrieved") or []))] for r in misses]) if misses else "<p>none</p>")
    conv = [r for r in cand["records"] if r.get("kind") == "turn"]
    if conv:
        out.append("<h2>Golden conversations</h2>")
        out.append(_table(["turn", "user", "query retrieved on", "answer", "result"], [
            [_rid(r), r["question"], r.get("query", ""), r["answer"],
             _Raw("<span class='pass'>ok</span>" if r.get("passed") else f"<span class='fail'>{html.escape('; '.join(r.get('failures', [])))}</span>")]
            for r in conv]))
    out.append("<h2>Every question</h2>")
    qa = [r for r in cand["records"] if r.get("kind") != "turn"]
    out.append(_table(["id", "split", "phrasing", "tier", "correct", "latency ms", "grounded", "answer"], [
        [r["id"], r.get("split"), r.get("phrasing"), r.get("tier"), "yes" if _ok(r) else "NO", r.get("latency_ms"),
         r.get("groundedness"), r["answer"]] for r in qa], {5, 6}))
    out.append("</body></html>")
    return "".join(out)
