"""`agenix eval`: the eval_report asset's evaluation from the command line, printed as a table.

    agenix eval                         # the use case's current candidate (config/releases/<use case>.yaml)
    agenix eval support-assistant-r1    # a release of the deployment manifest, by name
    agenix eval --candidate prompt_version=v2,model=extractive   # the current candidate with parts replaced

Same function as the asset (assets/evaluation.run_evaluation), same figures, same report files; it records no
gate verdict (only the asset's evaluation counts for approval).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from .core.config import ConfigError, default_config_dir, load_yaml_model
from .core.eval_report import HEADLINE, delta_class
from .core.paths import AgenixPaths

CANDIDATE_FIELDS = ("model", "prompt_version", "index_version")


def parse_overrides(text: str | None) -> dict[str, Any]:
    """``key=value,key=value`` with keys model, prompt_version, index_version (an int or live)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not value.strip():
            raise typer.BadParameter(f"--candidate: {part!r} is not key=value")
        if key not in CANDIDATE_FIELDS:
            raise typer.BadParameter(f"--candidate: unknown part {key!r} (known: {', '.join(CANDIDATE_FIELDS)})")
        value = value.strip()
        out[key] = int(value) if key == "index_version" and value.isdigit() else value
    return out


def resolve_target(config_dir: Path, home: Path, use_case: str, release: str | None,
                   overrides: dict[str, Any]) -> Any:
    """The candidate to evaluate (a ``core.registry.ResolvedCandidate``): the use case's candidate spec
    (config/releases/<use case>.yaml) with ``overrides`` laid over it, or a release of the deployment manifest."""
    from serving.config import DeploymentManifest, GatewayConfig

    from .core import registry as reg

    registries = reg.load_registries(config_dir, use_case)
    spec = reg.load_release_spec(config_dir, use_case)
    want = spec.candidate.model_dump()
    if release:
        gw = GatewayConfig.load(config_dir)
        manifest_path = gw.live_manifest_path(home)
        manifest = load_yaml_model(manifest_path, DeploymentManifest)
        dep = manifest.use_cases.get(use_case)
        found = None
        if dep is not None:
            for rel in filter(None, (dep.release, dep.canary.release if dep.canary else None,
                                     dep.shadow.release if dep.shadow else None)):
                if rel.name == release:
                    found = rel
        if found is None:
            raise LookupError(f"no release {release!r} of {use_case!r} in {manifest_path}")
        want.update(model=found.model, prompt_version=found.prompt_version, index_version=found.index_version)
    want.update(overrides)
    spec = spec.model_copy(update={"candidate": type(spec.candidate).model_validate(want)})
    servable = reg.servable_index_versions(config_dir, home / "index", use_case)
    resolution = reg.resolve_candidate(registries, spec, servable)
    if resolution.problems:
        raise LookupError("the candidate does not resolve: " + "; ".join(resolution.problems))
    return resolution.candidate


def print_report(report: dict[str, Any]) -> None:
    cs = report["candidate"]["summary"]
    ps = (report.get("production") or {}).get("summary") or {}
    d = report.get("deltas") or {}
    typer.echo(f"{report['candidate_id']} on {report['suite']} ({report['items']} questions, "
               f"{report['conversations']} conversations)")
    typer.echo(f"{'figure':<28} {'candidate':>12} {'production':>12} {'delta':>10}")

    def f(v: Any) -> str:
        return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    for m in HEADLINE:
        if m not in cs:
            continue
        delta = (d.get(m) or {}).get("delta")
        mark = {"better": " +", "worse": " !"}.get(delta_class(m, delta), "")
        typer.echo(f"{m:<28} {f(cs.get(m)):>12} {f(ps.get(m)) if ps else '-':>12} {f(delta):>10}{mark}")
    for key, label in (("accuracy_by_tier", "tier"), ("accuracy_by_split_phrasing", "split")):
        for group, value in sorted((cs.get(key) or {}).items()):
            prod = (ps.get(key) or {}).get(group)
            typer.echo(f"  {label} {group:<21} {f(value):>12} {f(prod):>12}")
    for v in report["verdicts"]:
        typer.echo(f"{'PASS' if v['passed'] else 'FAIL'} {v['check']}: {v['description']}")
    typer.echo(f"report: {report['report_path']}")


def eval_command(
    release: Annotated[str | None, typer.Argument(help="a release name of the deployment manifest (default: the current candidate)")] = None,
    candidate: Annotated[str | None, typer.Option("--candidate", help="parts to replace: model=..,prompt_version=..,index_version=..")] = None,
    use_case: Annotated[str, typer.Option("--use-case")] = "support-assistant",
    home: Annotated[Path | None, typer.Option("--home", help="platform folder (default $AGENIX_HOME)")] = None,
    config_dir: Annotated[Path | None, typer.Option("--config-dir", help="config folder (default $AGENIX_CONFIG_DIR)")] = None,
    suite: Annotated[Path | None, typer.Option("--suite", help="a golden suite file instead of the use case's")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report's figures as JSON")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="one line per question")] = False,
) -> None:
    """Evaluate a release candidate (or a release) against the golden suite, beside production; print the figures."""
    from .assets.evaluation import run_evaluation

    if home is not None:
        os.environ["AGENIX_HOME"] = str(home.resolve())
    paths = AgenixPaths.from_env()
    cfg = Path(config_dir) if config_dir else default_config_dir()
    try:
        target = resolve_target(cfg, paths.home, use_case, release, parse_overrides(candidate))
        report = run_evaluation(use_case=use_case, config_dir=cfg, home=paths.home, candidate=target,
                                command="agenix eval " + (release or "") + (f" --candidate {candidate}" if candidate else ""),
                                progress=typer.echo if verbose else None, suite_path=suite)
    except (ConfigError, LookupError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"candidate_id": report["candidate_id"], "passed": report["passed"],
                               "suite": report["suite"], "items": report["items"],
                               "conversations": report["conversations"],
                               "candidate": report["candidate"]["summary"],
                               "production": (report.get("production") or {}).get("summary"),
                               "deltas": report["deltas"], "verdicts": report["verdicts"],
                               "report": report["report_path"]}, indent=1, default=str))
    else:
        print_report(report)
    raise typer.Exit(0 if report["passed"] else 1)
