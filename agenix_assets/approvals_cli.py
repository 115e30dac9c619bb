"""`agenix approvers add|list|revoke`, `agenix approve RELEASE` and `agenix audit verify|RELEASE`.

Approvals are signed with the approver's own credential and kept in append-only, hash-chained ledgers under
$AGENIX_HOME/audit (core/approvals.py). `agenix approve --token` only signs: the token is pasted into the
Dagster Launchpad's approval job, which records it.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from .core.approvals import (
    ApprovalError,
    ApprovalPolicy,
    add_approver,
    approval_summary,
    approvals_for,
    approvals_ledger,
    approve,
    approvers,
    audit_counts,
    audit_dir,
    encode_token,
    load_approval_policy,
    revoke_approver,
    sign_approval,
)
from .core.config import ConfigError, UseCaseCharter, default_config_dir, load_yaml_model
from .core.ledger import LedgerError

approvers_app = typer.Typer(
    no_args_is_help=True, add_completion=False,
    help="Release approvers: one credential per person and role; only its public key is kept.",
)

# The same options as agenix_assets.cli (not imported at module level: that module adds these commands to itself).
HomeOption = Annotated[
    Path | None, typer.Option("--home", help="Platform folder (default: $AGENIX_HOME or .agenix)", show_default=False)
]
ConfigDirOption = Annotated[
    Path | None, typer.Option("--config-dir", help="config folder (default: $AGENIX_CONFIG_DIR or the repository's "
                              "config/)", show_default=False)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text")]
CREDENTIAL_ENV = "AGENIX_APPROVER_CREDENTIAL"


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _home(home: Path | None) -> Path:
    from .cli import _paths

    return _paths(home).home


def _policy(config_dir: Path | None) -> ApprovalPolicy:
    try:
        return load_approval_policy(Path(config_dir or default_config_dir()).resolve())
    except ConfigError as exc:
        _fail(str(exc))


def find_eval_report(home: Path, release: str) -> tuple[Path, dict[str, Any]]:
    """The evaluation report of ``release``: an approval names the release hash the evaluation measured, so a
    release nobody evaluated cannot be approved."""
    base = Path(home) / "eval"
    found = sorted(base.glob(f"*/{release}/report.json")) if "/" not in release else []
    if not found:
        raise ApprovalError(f"release {release} has no evaluation report under {base}: evaluate it first "
                            "(agenix eval / materialize <use_case>/eval_report)")
    if len(found) > 1:
        raise ApprovalError(f"release {release} has evaluation reports under several use cases: "
                            f"{', '.join(map(str, found))}")
    try:
        report = json.loads(found[0].read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ApprovalError(f"{found[0]}: not a JSON report ({exc})") from None
    missing = [k for k in ("use_case", "candidate_id", "candidate_hash", "passed") if k not in report]
    if missing:
        raise ApprovalError(f"{found[0]}: report lacks {', '.join(missing)} (written by an older agenix? "
                            "evaluate the release again)")
    if report["candidate_id"] != release:
        raise ApprovalError(f"{found[0]}: candidate_id is {report['candidate_id']!r}, not {release!r}")
    return found[0], report


def _risk_class(config_dir: Path | None, use_case: str) -> str | None:
    folder = Path(config_dir or default_config_dir()) / "use_cases"
    for path in sorted(folder.glob("*.yaml")):
        try:
            charter = load_yaml_model(path, UseCaseCharter)
        except ConfigError:
            continue
        if charter.id == use_case:
            return charter.risk_class
    return None


# ---------------------------------------------------------------- approvers


@approvers_app.command("add")
def approvers_add(
    name: Annotated[str, typer.Option("--name", help="The person's full name, as they will sign (--by)")],
    role: Annotated[str, typer.Option("--role", help="One role of config/governance/approval_policy.yaml")],
    by: Annotated[str | None, typer.Option("--by", help="Who registers the approver (default: your login)",
                                           show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Credential file to write (default: "
                                             "$AGENIX_HOME/audit/credentials/<approver_id>.cred)",
                                             show_default=False)] = None,
    home: HomeOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """Register a person in one role and write their signing credential (shown once; only the public key is
    kept). A person with two roles is added twice and gets two credentials."""
    root = _home(home)
    policy = _policy(config_dir)
    if out is not None and out.exists():
        _fail(f"--out {out} already exists; credentials are never overwritten")
    try:
        approver, credential = add_approver(root, name, role, by or getpass.getuser(), policy)
    except (ApprovalError, LedgerError) as exc:
        _fail(str(exc))
    path = out or audit_dir(root) / "credentials" / f"{approver.approver_id}.cred"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(credential + "\n")
    except OSError as exc:
        # A registered approver nobody holds the key of would only confuse the audit trail.
        revoke_approver(root, approver.approver_id, "agenix approvers add", f"credential could not be written: {exc}")
        _fail(f"{path}: could not write the credential ({exc.strerror}); approver {approver.approver_id} revoked")
    typer.echo("\n".join([
        f"approver_id: {approver.approver_id}",
        f"name:        {approver.name}",
        f"role:        {approver.role} ({policy.roles[approver.role]})",
        f"credential:  {path}",
        "",
        f"Hand this file to {approver.name}; it is shown once (only the public key is kept) and signs approvals as "
        f"{approver.role} only. Delete it here once handed over.",
    ]))


@approvers_app.command("list")
def approvers_list(as_json: JsonFlag = False, home: HomeOption = None) -> None:
    """Every approver ever registered (revoked ones too: their earlier approvals stay valid)."""
    try:
        found = list(approvers(_home(home)).values())
    except LedgerError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(a) for a in found], indent=2))
        return
    if not found:
        typer.echo("no approvers; add one with `agenix approvers add --name NAME --role ROLE`")
        return
    header = ("APPROVER_ID", "NAME", "ROLE", "ADDED", "ADDED BY", "STATUS")
    rows = [(a.approver_id, a.name, a.role, a.added_at[:19] + "Z", a.added_by,
             f"revoked {a.revoked_at[:19]}Z: {a.revoked_reason}" if a.revoked_at else "active") for a in found]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@approvers_app.command("revoke")
def approvers_revoke(
    approver_id: Annotated[str, typer.Argument(help="The approver_id shown by `agenix approvers list`")],
    by: Annotated[str, typer.Option("--by", help="Who revokes")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail)")],
    home: HomeOption = None,
) -> None:
    """Stop a credential from approving; approvals it signed before stay valid."""
    try:
        approver = revoke_approver(_home(home), approver_id, by, reason)
    except (ApprovalError, LedgerError) as exc:
        _fail(str(exc))
    typer.echo(f"revoked {approver.approver_id} ({approver.name}, {approver.role}) at {approver.revoked_at}")


# ---------------------------------------------------------------- approve


def approve_command(
    release: Annotated[str, typer.Argument(help="Release id, e.g. support-assistant-1a2b3c4d (as its eval report "
                                           "names it)")],
    role: Annotated[str, typer.Option("--role", help="The role you approve in (your credential's role)")],
    by: Annotated[str, typer.Option("--by", help="Your name, as registered")],
    note: Annotated[str, typer.Option("--note", help="What you checked and why you approve (kept in the audit trail)")],
    credential: Annotated[str | None, typer.Option(
        "--credential", envvar=CREDENTIAL_ENV, show_envvar=True, show_default=False,
        help="Your credential file (or the credential itself)")] = None,
    token: Annotated[bool, typer.Option("--token", help="Only sign, and print a token for the Launchpad's approval "
                                        "job (records nothing)")] = False,
    as_json: JsonFlag = False,
    home: HomeOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """Approve an evaluated release: sign a statement with your credential and record it in the audit ledger."""
    root = _home(home)
    policy = _policy(config_dir)
    if not credential:
        _fail(f"no credential: pass --credential FILE or set {CREDENTIAL_ENV}")
    try:
        report_path, report = find_eval_report(root, release)
        fields = {"use_case": report["use_case"], "release": release, "release_hash": report["candidate_hash"],
                  "role": role, "by": by, "note": note}
        if report["passed"] is not True:
            raise ApprovalError(f"release {release} did not pass its evaluation ({report_path}); only a release "
                                "that passed can be approved")
        if token:
            signed = sign_approval(credential, channel="launchpad", ttl_hours=policy.token_ttl_hours, **fields)
            typer.echo(encode_token(signed))
            return
        stored = approve(root, credential, policy, **fields)
    except (ApprovalError, LedgerError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(stored, indent=2))
        return
    lines = [
        f"recorded approval of {release} (use case {stored['use_case']}, hash {stored['release_hash'][:16]}...) "
        f"by {stored['by']} as {stored['role']}",
        f"  seq {stored['seq']}, hash {stored['hash']} in {approvals_ledger(root).path}",
    ]
    risk_class = _risk_class(config_dir, stored["use_case"])
    if risk_class is not None:
        lines.append("  " + approval_summary(policy, risk_class, approvals_for(root, release, policy).valid))
    typer.echo("\n".join(lines))


# ---------------------------------------------------------------- audit


def audit_command(
    target: Annotated[str, typer.Argument(help="`verify` to check the audit trail, or a release id to export its "
                                          "evidence pack")],
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the evidence pack", show_default=False)]
    = None,
    as_json: JsonFlag = False,
    home: HomeOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """`agenix audit verify`: check the approval, approver and deployment ledgers (exit 1 on any problem).
    `agenix audit RELEASE`: export the release's evidence pack."""
    root = _home(home)
    if target != "verify":
        try:
            from .core.evidence import export_pack
        except ImportError as exc:
            _fail(f"evidence packs are not available in this installation (agenix_assets.core.evidence: {exc})")
        checks: list[dict[str, Any]] = []
        if os.environ.get("DAGSTER_HOME"):
            try:
                from .assets.audit import dagster_checks_from_instance
                from .core.evidence import use_case_of

                checks = dagster_checks_from_instance(use_case_of(root, target))
            except Exception as exc:  # the pack is still worth having without Dagster's own history
                typer.echo(f"warning: Dagster's check history not included ({type(exc).__name__}: {exc})", err=True)
        try:
            written = export_pack(home=root, config_dir=Path(config_dir or default_config_dir()).resolve(),
                                  release=target, out=out, dagster_checks=checks)
        except (ApprovalError, LedgerError, ConfigError, LookupError) as exc:
            _fail(str(exc))
        typer.echo(f"evidence pack of {target}:\n  {written['html']}\n  {written['json']}")
        return
    from .core.evidence import audit_trail_problems

    problems = audit_trail_problems(root)
    try:
        counts = audit_counts(root)
    except LedgerError:
        counts = None
    if as_json:
        typer.echo(json.dumps({"intact": not problems, "problems": problems,
                               "approvals": counts[0] if counts else None,
                               "approvers": counts[1] if counts else None}, indent=2))
    elif problems:
        typer.echo(f"audit trail NOT intact ({len(problems)} problem(s)) under {audit_dir(root)}:")
        for problem in problems:
            typer.echo(f"  {problem}")
    else:
        typer.echo(f"audit trail intact: {counts[0]} approvals, {counts[1]} approvers ({audit_dir(root)})")
    if problems:
        raise typer.Exit(1)
