"""Evaluation: every release candidate measured against its use case's golden suite before anyone approves it.

``<use case>/eval_report`` runs the candidate and the release in production, side by side in one step, through
the gateway's own RAG pipeline (serving/pipeline.py, the functions that serve requests) against the real model
servers, on the golden suite: QA items (generator-worded and held-out paraphrases), questions the knowledge base
cannot answer, golden conversations. It writes an HTML report and a JSON record under
``$AGENIX_HOME/eval/<use case>/<candidate>/``, puts every figure a user watches in numeric metadata, and judges
two blocking checks:

- ``charter_thresholds``: the charter's answer-accuracy KPI and p95 latency target;
- ``no_regression``: no figure worse than production's beyond the tolerance in config/evaluation.yaml.

Write-audit-publish (core/gates.py): the report is always written (a failed evaluation is evidence too), but the
evaluation is published, i.e. the candidate counts as evaluated-and-passed for whatever reads it later
(approval, rollout), only in the transaction that records both checks passed.
"""


import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

import dagster as dg

from ..core import gates
from ..core.eval_report import (
    CHARTER_THRESHOLDS,
    HEADLINE,
    NO_REGRESSION,
    charter_thresholds,
    judge_regression,
    judge_thresholds,
    load_evaluation_settings,
    render_html,
)
from ..core.paths import AgenixPaths
from ..core.tables import markdown_table
from ..resources.llm import ModelServerResource, local_model_servers
from ..resources.platform import AgenixResource
from ..resources.warehouse import WarehouseResource
from .governance import evidence_metadata
from .rag import rag_key

GROUP = "evaluation"
SCHEMA = "evaluation"
REPORTS = f"{SCHEMA}.reports"


def eval_dir(home: Path, use_case: str) -> Path:
    return Path(home) / "eval" / use_case


def golden_suite_path(config_dir: Path, landing: Path, use_case: str) -> Path:
    """The sample company's own suite while it is in the landing zone, else config's (config/evaluation.yaml)."""
    from ..core.paths import sample_golden_set_path

    generated = sample_golden_set_path(landing, use_case)
    if generated.is_file():
        return generated
    settings = load_evaluation_settings(config_dir)
    return Path(config_dir) / settings.use_cases[use_case].golden_set


def ensure_schema(con) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {REPORTS} (
            use_case VARCHAR, candidate_id VARCHAR, evaluated_at TIMESTAMPTZ, run_id VARCHAR, passed BOOLEAN,
            published BOOLEAN, suite_hash VARCHAR, summary JSON, production_summary JSON, deltas JSON,
            report_path VARCHAR)"""
    )


def run_evaluation(*, use_case: str, config_dir: Path, home: Path, candidate: Any, environment: str | None = None,
                   log: Any = None, command: str = "", progress: Any = None, autostart: bool = True,
                   suite_path: Path | None = None) -> dict[str, Any]:
    """Evaluate ``candidate`` (a ``core.registry.ResolvedCandidate``) and the production release; write
    report.json/report.html; return the report dict (with verdicts). Shared by the eval_report asset and
    ``agenix eval``."""
    from serving.config import GatewayConfig
    from serving.evaluation import EvalTarget, evaluate_pair, suite_hash
    from serving.pipeline import RagPipeline

    from ..core import registry as reg
    from ..core.config import load_project_config
    from ..core.golden import load_golden

    config_dir, home = Path(config_dir), Path(home)
    project = load_project_config(config_dir)
    charter = next((c for c in project.use_cases if c.id == use_case), None)
    if charter is None:
        raise LookupError(f"no charter for use case {use_case!r} under {config_dir / 'use_cases'}")
    settings = load_evaluation_settings(config_dir)
    if use_case not in settings.use_cases:
        raise LookupError(f"{config_dir / 'evaluation.yaml'}: use_cases: no entry for {use_case!r}")
    paths = AgenixPaths(home)
    suite_path = Path(suite_path) if suite_path else golden_suite_path(config_dir, paths.landing, use_case)
    suite = load_golden(suite_path, use_case)

    def target(label: str, c: Any, name: str | None = None) -> EvalTarget:
        return EvalTarget(label, c.release(name), retrieval=c.retrieval,
                          parts={p: h for p, (_, h) in c.parts().items()})

    cand = target("candidate", candidate)
    registries = reg.load_registries(config_dir, use_case)
    deployed = reg.production_parts(config_dir, home / "index", use_case, registries, environment)
    production = target("production", deployed[1], deployed[0]) if deployed else None
    gw = GatewayConfig.load(config_dir, environment)
    pipeline = RagPipeline.from_config(config_dir, home, use_case, environment=environment)
    detector = pipeline.guardrails.redactor  # the gateway's own PII detector (CRM contacts as deny list)
    with local_model_servers(gw.registry, log) if autostart else contextlib.nullcontext():
        cand_run, prod_run, deltas = evaluate_pair(pipeline, cand, production, suite, detector=detector,
                                                   progress=progress)
    thresholds = charter_thresholds(charter, f"{config_dir / 'use_cases'}")
    verdicts = [
        judge_thresholds(cand_run.summary, cand_run.records, thresholds),
        judge_regression(deltas if prod_run else None, settings.use_cases[use_case].tolerance, cand_run.records,
                         prod_run.records if prod_run else None),
    ]
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report = {
        "use_case": use_case,
        "candidate_id": candidate.candidate_id,
        "candidate_hash": candidate.candidate_hash,
        "parts": {p: {"value": v, "hash": h} for p, (v, h) in candidate.parts().items()},
        "evaluated_at": now,
        "suite": str(suite_path),
        "suite_hash": suite_hash(suite),
        "items": len(suite.items),
        "conversations": len(suite.conversations),
        "command": command,
        "candidate": cand_run.to_json(),
        "production": prod_run.to_json() if prod_run else None,
        "production_release": deployed[0] if deployed else None,
        "deltas": deltas,
        "verdicts": [dataclasses.asdict(v) for v in verdicts],
        "passed": all(v.passed for v in verdicts),
    }
    folder = eval_dir(home, use_case) / candidate.candidate_id
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "report.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    (tmp / "report.html").write_text(render_html(report), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    if prod_run is not None:
        prod_file = eval_dir(home, use_case) / "production.json"
        prod_file.write_text(json.dumps({"evaluated_at": now, "suite_hash": report["suite_hash"],
                                         **prod_run.to_json()}, indent=1, default=str), encoding="utf-8")
    report["report_path"] = str(folder / "report.html")
    return report


def summary_metadata(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Numeric figures as metadata (the UI plots them), nested groups flattened: accuracy_tier_extractive, ..."""
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[prefix + k] = float(v) if isinstance(v, float) else v
        elif isinstance(v, dict) and k.startswith("accuracy_by_"):
            short = k.removeprefix("accuracy_by_").removesuffix("_phrasing")
            for group, g in v.items():
                if isinstance(g, (int, float)) and not isinstance(g, bool):
                    out[f"{prefix}accuracy_{short}_{group}".replace("-", "_")] = float(g)
    return out


def build_evaluation_assets(use_case: str) -> list:
    candidate_key = rag_key(use_case, "release_candidate")
    report_key = rag_key(use_case, "eval_report")

    @dg.asset(
        key=report_key,
        deps=[candidate_key],
        group_name=GROUP,
        owners=["team:llm"],
        kinds={"python", "html"},
        description=f"Evaluation of the release candidate of '{use_case}' beside the release in production: "
        "retrieval (recall@k, MRR, nDCG), answer accuracy per tier and on held-out paraphrases, judge-free "
        "groundedness, refusal correctness, golden conversations, PII leakage, latency p50/p95, tokens and cost, "
        "deltas. Computed through the gateway's own RAG pipeline and the real model servers; HTML report linked.",
        check_specs=[
            dg.AssetCheckSpec(CHARTER_THRESHOLDS, asset=report_key, blocking=True,
                              description="The charter's answer-accuracy KPI and p95 latency target hold."),
            dg.AssetCheckSpec(NO_REGRESSION, asset=report_key, blocking=True,
                              description="No figure worse than the release in production beyond the tolerance (config/evaluation.yaml)."),
        ],
    )
    def eval_report(context: dg.AssetExecutionContext, agenix: AgenixResource, warehouse: WarehouseResource,
                    model_servers: ModelServerResource):
        from ..core import registry as reg

        config_dir = Path(agenix.load_config().config_dir)
        home = agenix.paths.home
        with warehouse.connect() as con:
            try:
                candidate = reg.latest_candidate(con, candidate_key.to_user_string(), report_key.to_user_string())
            except gates.GateRefused as refused:
                raise dg.Failure(description=str(refused)) from None
        stale = reg.stale_parts(candidate, config_dir, home / "index")
        if stale:
            raise dg.Failure(
                description=f"candidate {candidate.candidate_id} was resolved from files that changed since "
                f"({', '.join(stale)}): materialize {candidate_key.to_user_string()} again to evaluate what config/ "
                "holds now")
        report = run_evaluation(use_case=use_case, config_dir=config_dir, home=home, candidate=candidate,
                                log=context.log, command=f"dagster run {context.run_id}",
                                autostart=model_servers.autostart)
        verdicts = [gates.GateResult(report_key.to_user_string(), v["check"], v["passed"], v["description"],
                                     {"candidate_id": report["candidate_id"], "candidate_hash": report["candidate_hash"],
                                      **{k: x for k, x in v["evidence"].items() if k != "examples"}},
                                     context.run_id, report["evaluated_at"]) for v in report["verdicts"]]
        with warehouse.connect() as con:
            ensure_schema(con)
            con.execute("BEGIN")
            gates.record_evaluation(con, verdicts, context.run_id, published=report["passed"])
            con.execute(
                f"INSERT INTO {REPORTS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [use_case, report["candidate_id"], report["evaluated_at"], context.run_id, report["passed"],
                 report["passed"], report["suite_hash"], json.dumps(report["candidate"]["summary"]),
                 json.dumps((report["production"] or {}).get("summary")), json.dumps(report["deltas"]),
                 report["report_path"]],
            )
            con.execute("COMMIT")
        cs = report["candidate"]["summary"]
        ps = (report["production"] or {}).get("summary") or {}
        rows = [{"figure": m, "candidate": cs.get(m), "production": ps.get(m),
                 "delta": (report["deltas"].get(m) or {}).get("delta")}
                for m in HEADLINE if m in cs]
        metadata: dict[str, Any] = {
            "candidate_id": report["candidate_id"],
            "passed": report["passed"],
            "report": dg.MetadataValue.path(report["report_path"]),
            "figures": dg.MetadataValue.md(markdown_table(rows)),
            "questions": report["items"],
            "conversations": report["conversations"],
            **summary_metadata(cs),
            **summary_metadata(ps, "production_"),
            **{f"delta_{k}": float(d["delta"]) for k, d in report["deltas"].items() if "." not in k},
        }
        yield dg.MaterializeResult(metadata=metadata,
                                   data_version=dg.DataVersion(f"{report['candidate_id']}-{report['suite_hash']}"))
        for v in report["verdicts"]:
            ev = dict(v["evidence"])
            examples = ev.pop("examples", None)
            md = evidence_metadata(ev)
            if examples:
                md["examples"] = dg.MetadataValue.md(markdown_table(
                    [{"id": e["id"], "question": e["question"], "expected": "; ".join(e["expected"] or []),
                      "answer": e["answer"], "tier": e["tier"]} for e in examples]))
            yield dg.AssetCheckResult(check_name=v["check"], passed=v["passed"], description=v["description"],
                                      metadata=md)

    return [eval_report]
