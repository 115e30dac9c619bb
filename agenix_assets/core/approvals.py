"""Release approvals a compliance reviewer can trust: who approved which release, in which role, when, and why.

An approver is one person in one role with an Ed25519 key pair: the registry keeps the public key in the ledger
``$AGENIX_HOME/audit/approvers.jsonl`` and hands the person the private key once, as a credential string. An
approval is a statement naming one release by id and hash, signed with that credential, and recorded in the
ledger ``$AGENIX_HOME/audit/approvals.jsonl``. Both ledgers are hash-chained (core.ledger), so a deleted or edited
line shows; the signature additionally shows a statement nobody holding the approver's credential wrote, even if
its chain was recomputed. Signing needs no registry access, so an approver can sign on their own machine and hand
over a token (the Dagster Launchpad's approval job records it); recording checks everything again.

The registry's own ledger is the root of trust: someone who can rewrite approvers.jsonl and recompute its chain
can register a key of their own. Heads recorded elsewhere (``verify_audit(expected_heads=...)``) catch a rewrite
that drops records. No Dagster import.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import json
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, field_validator

from .config import ConfigError, RiskClass, Strict, _line_index, load_yaml_model
from .ledger import Ledger, LedgerError, canonical, record_hash, strip_line

POLICY_FILE = Path("governance") / "approval_policy.yaml"
CREDENTIAL_PREFIX = "agxp_"
TOKEN_PREFIX = "agxa_"
CHANNELS = ("cli", "launchpad")
# What an approver signs; the recorder adds signature, recorded_at and run_id, the ledger seq, prev and hash.
STATEMENT_FIELDS = ("kind", "use_case", "release", "release_hash", "role", "by", "approver_id", "note", "signed_at",
                    "expires_at", "nonce", "channel")
_CREDENTIAL = re.compile(r"^agxp_(apr_[0-9a-f]{10})_([A-Za-z0-9_-]{43})$")
_ROLE = re.compile(r"^[a-z][a-z0-9_]{1,62}$")


class ApprovalError(ValueError):
    """An approval, credential or token that cannot be accepted; the message names the field that failed."""


# ---------------------------------------------------------------- policy


class RiskClassRule(Strict):
    roles: list[str] = Field(min_length=1)
    # The charter must name its DPIA (dpia_reference) before a release of this class may be approved.
    dpia_required: bool = False

    @field_validator("roles")
    @classmethod
    def _no_duplicates(cls, roles: list[str]) -> list[str]:
        dupes = sorted({r for r in roles if roles.count(r) > 1})
        if dupes:
            raise ValueError(f"roles listed twice: {dupes}")
        return roles


class RiskClasses(Strict):
    # Every class a charter may name, so no release meets a class the policy forgot.
    low: RiskClassRule
    medium: RiskClassRule
    high: RiskClassRule


class ApprovalPolicy(Strict):
    risk_classes: RiskClasses
    roles: dict[str, str] = Field(min_length=1)
    separation_of_duties: bool = True
    token_ttl_hours: float = Field(default=24, gt=0, le=24 * 30)

    @field_validator("roles")
    @classmethod
    def _role_names(cls, roles: dict[str, str]) -> dict[str, str]:
        bad = [r for r in roles if not _ROLE.match(r)]
        if bad:
            raise ValueError(f"role names must be lower_snake_case: {bad}")
        empty = [r for r, what in roles.items() if not str(what).strip()]
        if empty:
            raise ValueError(f"say what each role is: {empty} have no description")
        return roles


def load_approval_policy(config_dir: Path) -> ApprovalPolicy:
    """config/governance/approval_policy.yaml; a role a risk class requires but ``roles`` does not define is an
    error naming its file and line (nobody could ever be registered for it, so no release would pass)."""
    path = Path(config_dir) / POLICY_FILE
    policy = load_yaml_model(path, ApprovalPolicy)
    lines = _line_index(path.read_text(encoding="utf-8"))
    problems = []
    for cls in ("low", "medium", "high"):
        for i, role in enumerate(getattr(policy.risk_classes, cls).roles):
            if role not in policy.roles:
                line = lines.get(("risk_classes", cls, "roles", i)) or lines.get(("risk_classes", cls))
                problems.append(f"{path}:{line}: risk_classes.{cls}.roles: role {role!r} is not defined under "
                                f"roles (defined: {', '.join(policy.roles)})")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return policy


def required_roles(policy: ApprovalPolicy, risk_class: RiskClass) -> list[str]:
    if risk_class not in ("low", "medium", "high"):
        raise ApprovalError(f"risk_class: {risk_class!r} is not low, medium or high")
    return list(getattr(policy.risk_classes, risk_class).roles)


# ---------------------------------------------------------------- time and encoding


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(when: dt.datetime) -> str:
    # Microseconds: a revocation and a signature in the same second must still be ordered.
    return when.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(value: Any, name: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ApprovalError(f"{name}: {value!r} is not an ISO timestamp") from None
    if when.tzinfo is None:
        raise ApprovalError(f"{name}: {value!r} has no time zone")
    return when


def short_time(value: str) -> str:
    """A ledger timestamp to the second, for messages."""
    try:
        return _parse_time(value, "time").astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ApprovalError:
        return str(value)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---------------------------------------------------------------- ledgers


def audit_dir(home: Path) -> Path:
    return Path(home) / "audit"


def approvers_ledger(home: Path) -> Ledger:
    return Ledger(audit_dir(home) / "approvers.jsonl")


def approvals_ledger(home: Path) -> Ledger:
    return Ledger(audit_dir(home) / "approvals.jsonl")


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Held across "check the ledger, then append" so two recorders of one token cannot both pass the nonce and
    separation-of-duties checks (the ledger's own lock covers only the append)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---------------------------------------------------------------- approvers


@dataclass(frozen=True)
class Approver:
    approver_id: str
    name: str
    role: str
    public_key: str  # base64 of the raw 32-byte Ed25519 public key
    added_at: str
    added_by: str = ""
    revoked_at: str | None = None
    revoked_reason: str | None = None

    def revoked_by(self, when: dt.datetime) -> bool:
        """Revoked at or before ``when``: a statement signed then carries no authority."""
        return self.revoked_at is not None and _parse_time(self.revoked_at, "revoked_at") <= when

    def verifies(self, statement: dict[str, Any], signature: str) -> bool:
        try:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(self.public_key, validate=True))
            key.verify(base64.b64decode(str(signature), validate=True), canonical(statement))
        except (InvalidSignature, ValueError, binascii.Error):
            return False
        return True


def approvers(home: Path) -> dict[str, Approver]:
    """Every approver ever registered, by id, revoked ones included (their earlier approvals stay valid)."""
    found: dict[str, Approver] = {}
    for rec in approvers_ledger(home).records():
        aid = rec.get("approver_id")
        if rec.get("kind") == "approver_added" and aid not in found:
            found[aid] = Approver(approver_id=aid, name=rec.get("name", ""), role=rec.get("role", ""),
                                  public_key=rec.get("public_key", ""), added_at=rec.get("at", ""),
                                  added_by=rec.get("by", ""))
        elif rec.get("kind") == "approver_revoked" and aid in found and found[aid].revoked_at is None:
            found[aid] = replace(found[aid], revoked_at=rec.get("at"), revoked_reason=rec.get("reason"))
    return found


def add_approver(home: Path, name: str, role: str, added_by: str, policy: ApprovalPolicy,
                 *, now: dt.datetime | None = None) -> tuple[Approver, str]:
    """Register ``name`` in ``role`` with a fresh key pair; return the approver and the credential, which exists
    nowhere else (only the public key is stored). A person with two roles gets two credentials, so a stolen or
    misused one speaks for one role only."""
    name, added_by = name.strip(), added_by.strip()
    if not name:
        raise ApprovalError("name: an approver needs the person's name")
    if not added_by:
        raise ApprovalError("by: say who registers the approver")
    if role not in policy.roles:
        known = "; ".join(f"{r} ({what})" for r, what in policy.roles.items())
        raise ApprovalError(f"role: {role!r} is not a role of the approval policy ({POLICY_FILE}); roles: {known}")
    for other in approvers(home).values():
        if other.name == name and other.role == role and other.revoked_at is None:
            raise ApprovalError(f"{name} already holds an active {role} credential ({other.approver_id}); revoke it "
                                "first to issue a new one")
    key = Ed25519PrivateKey.generate()
    approver = Approver(
        approver_id=f"apr_{secrets.token_hex(5)}", name=name, role=role,
        public_key=base64.b64encode(key.public_key().public_bytes_raw()).decode("ascii"),
        added_at=_iso(now or _now()), added_by=added_by,
    )
    approvers_ledger(home).append({"kind": "approver_added", "approver_id": approver.approver_id, "name": name,
                                   "role": role, "public_key": approver.public_key, "at": approver.added_at,
                                   "by": added_by})
    return approver, f"{CREDENTIAL_PREFIX}{approver.approver_id}_{_b64url(key.private_bytes_raw())}"


def revoke_approver(home: Path, approver_id: str, by: str, reason: str,
                    *, now: dt.datetime | None = None) -> Approver:
    """From now on the credential approves nothing; approvals it signed before stay valid."""
    if not by.strip() or not reason.strip():
        raise ApprovalError("by, reason: a revocation says who revoked and why")
    approver = approvers(home).get(approver_id)
    if approver is None:
        raise ApprovalError(f"approver_id: {approver_id!r} is not a registered approver")
    if approver.revoked_at is not None:
        raise ApprovalError(f"approver {approver_id} ({approver.name}, {approver.role}) was already revoked at "
                            f"{approver.revoked_at}")
    at = _iso(now or _now())
    approvers_ledger(home).append({"kind": "approver_revoked", "approver_id": approver_id, "at": at,
                                   "by": by.strip(), "reason": reason.strip()})
    return replace(approver, revoked_at=at, revoked_reason=reason.strip())


def load_credential(value_or_path: str | Path) -> tuple[str, Ed25519PrivateKey]:
    """A credential string, or a file holding one. Errors never echo the credential (it is a secret)."""
    text, source = str(value_or_path).strip(), "credential"
    if not text.startswith(CREDENTIAL_PREFIX):
        path = Path(text).expanduser()
        try:
            readable = path.is_file()
        except OSError:  # a mangled credential too long to be a file name
            readable = False
        if not readable:
            raise ApprovalError(f"credential: neither a credential (agxp_...) nor a readable file: {text[:80]!r}")
        text, source = path.read_text(encoding="utf-8").strip(), str(path)
    match = _CREDENTIAL.match(text)
    if match is None:
        raise ApprovalError(f"{source}: not an approver credential (expected agxp_apr_<10 hex>_<43 base64url "
                            "characters>, as `agenix approvers add` wrote it)")
    return match.group(1), Ed25519PrivateKey.from_private_bytes(_unb64url(match.group(2)))


# ---------------------------------------------------------------- signing


def sign_approval(credential: str | Path, *, use_case: str, release: str, release_hash: str, role: str, by: str,
                  note: str, channel: str, ttl_hours: float, now: dt.datetime | None = None) -> dict[str, Any]:
    """The approver's signed statement: one release (id and hash), one role, one person, a note, a validity
    window and a nonce (each statement is recorded once). Pure crypto: nothing is read or written."""
    values = {"use_case": use_case, "release": release, "release_hash": release_hash, "role": role, "by": by,
              "note": note}
    empty = [k for k, v in values.items() if not str(v).strip()]
    if empty:
        raise ApprovalError(f"{', '.join(empty)}: an approval states all of use case, release, release hash, role, "
                            "name and note")
    if channel not in CHANNELS:
        raise ApprovalError(f"channel: {channel!r} is not one of {CHANNELS}")
    approver_id, key = load_credential(credential)
    signed_at = now or _now()
    statement = {
        "kind": "approval", **{k: str(v).strip() for k, v in values.items()}, "approver_id": approver_id,
        "signed_at": _iso(signed_at), "expires_at": _iso(signed_at + dt.timedelta(hours=ttl_hours)),
        "nonce": secrets.token_hex(16), "channel": channel,
    }
    return {**statement, "signature": base64.b64encode(key.sign(canonical(statement))).decode("ascii")}


def statement_of(signed: dict[str, Any]) -> dict[str, Any]:
    """The signed part of a token or a stored record."""
    return {k: signed[k] for k in STATEMENT_FIELDS if k in signed}


def encode_token(signed: dict[str, Any]) -> str:
    """One line to paste into the Launchpad's approval job config."""
    return TOKEN_PREFIX + _b64url(canonical(signed))


def decode_token(token: str) -> dict[str, Any]:
    token = str(token).strip()
    if not token.startswith(TOKEN_PREFIX):
        raise ApprovalError("token: not an approval token (it starts with agxa_; `agenix approve ... --token` "
                            "prints one)")
    try:
        signed = json.loads(_unb64url(token[len(TOKEN_PREFIX):]))
    except (ValueError, binascii.Error):
        raise ApprovalError("token: damaged (not base64url of a JSON statement); copy it again whole") from None
    if not isinstance(signed, dict):
        raise ApprovalError("token: damaged (not a JSON object)")
    _check_shape(signed)
    return signed


def _check_shape(signed: dict[str, Any]) -> None:
    missing = [k for k in (*STATEMENT_FIELDS, "signature") if k not in signed]
    extra = sorted(set(signed) - {*STATEMENT_FIELDS, "signature"})
    if missing or extra:
        raise ApprovalError("statement: " + "; ".join(filter(None, [
            missing and f"missing {', '.join(missing)}", extra and f"unknown fields {', '.join(extra)}"])))
    wrong = [k for k in (*STATEMENT_FIELDS, "signature") if not isinstance(signed[k], str)]
    if wrong:
        raise ApprovalError(f"{', '.join(wrong)}: must be text")
    if signed["kind"] != "approval":
        raise ApprovalError(f"kind: {signed['kind']!r} is not an approval")


# ---------------------------------------------------------------- recording


def record_approval(home: Path, signed: dict[str, Any], policy: ApprovalPolicy, *,
                    expected: dict[str, Any] | None = None, run_id: str | None = None,
                    now: dt.datetime | None = None) -> dict[str, Any]:
    """Check a signed statement against the approver registry and the ledger, then append it; returns the
    stored record (with seq and hash). Every refusal is an ApprovalError naming the field that failed.

    ``expected`` holds what the recording side was told independently of the token (the Launchpad form's
    release, role, by and note), so a token pasted into the wrong form is refused, not recorded."""
    now = now or _now()
    _check_shape(signed)
    statement, aid = statement_of(signed), signed["approver_id"]
    approver = approvers(home).get(aid)
    if approver is None:
        raise ApprovalError(f"approver_id: {aid!r} is not a registered approver (see `agenix approvers list`)")
    signed_at = _parse_time(signed["signed_at"], "signed_at")
    # Revoked by the time it is recorded counts too: otherwise a revoked credential could backdate signed_at.
    if approver.revoked_by(signed_at) or approver.revoked_by(now):
        raise ApprovalError(f"approver_id: {aid} ({approver.name}, {approver.role}) was revoked at "
                            f"{approver.revoked_at} ({approver.revoked_reason}); its credential approves nothing since")
    if not approver.verifies(statement, signed["signature"]):
        raise ApprovalError(f"signature: does not verify with the public key of {aid} ({approver.name}): the "
                            "statement was altered after signing or signed with another key")
    if signed["role"] != approver.role:
        raise ApprovalError(f"role: {approver.name}'s credential {aid} is registered for {approver.role!r}, so it "
                            f"cannot approve as {signed['role']!r}")
    if signed["by"] != approver.name:
        raise ApprovalError(f"by: credential {aid} belongs to {approver.name!r}, not {signed['by']!r}")
    expires_at = _parse_time(signed["expires_at"], "expires_at")
    if expires_at <= now:
        raise ApprovalError(f"expires_at: the approval expired at {signed['expires_at']}; sign a new one")
    if expires_at - signed_at > dt.timedelta(hours=policy.token_ttl_hours):
        raise ApprovalError(f"expires_at: valid for {(expires_at - signed_at) / dt.timedelta(hours=1):g} h; the "
                            f"policy allows at most token_ttl_hours {policy.token_ttl_hours:g}")
    ledger = approvals_ledger(home)
    with _exclusive(ledger.path.with_name(ledger.path.name + ".record.lock")):
        records = [strip_line(r) for r in ledger.records()]
        used = next((r for r in records if r.get("nonce") == signed["nonce"]), None)
        if used is not None:
            raise ApprovalError(f"nonce: this approval was already recorded (seq {used.get('seq')}); a token is "
                                "recorded once")
        for key, want in (expected or {}).items():
            if key not in STATEMENT_FIELDS:
                raise ApprovalError(f"expected: {key!r} is not a field of an approval")
            if signed[key] != want:
                raise ApprovalError(f"{key}: the token says {signed[key]!r} but the form says {want!r}")
        if policy.separation_of_duties:
            for earlier in _valid(records, approvers(home), release=signed["release"]):
                if earlier["by"] == signed["by"] and earlier["role"] != signed["role"]:
                    raise ApprovalError(
                        f"by: {signed['by']} already approved {signed['release']} as {earlier['role']} (seq "
                        f"{earlier['seq']}); separation_of_duties lets one person approve a release in one role only")
        return ledger.append({**signed, "recorded_at": _iso(now), "run_id": run_id})


def approve(home: Path, credential: str | Path, policy: ApprovalPolicy, *, now: dt.datetime | None = None,
            **fields: Any) -> dict[str, Any]:
    """Sign and record in one step (the CLI's approval): fields are use_case, release, release_hash, role, by,
    note."""
    signed = sign_approval(credential, channel="cli", ttl_hours=policy.token_ttl_hours, now=now, **fields)
    return record_approval(home, signed, policy, now=now)


# ---------------------------------------------------------------- reading


def record_problems(record: dict[str, Any], registry: dict[str, Approver]) -> list[str]:
    """Why a stored approval carries no authority; empty when it does."""
    try:
        _check_shape(statement_of(record) | {"signature": record.get("signature")})
    except ApprovalError as exc:
        return [f"malformed: {exc}"]
    approver = registry.get(record["approver_id"])
    if approver is None:
        return [f"approver {record['approver_id']} is not registered (forged)"]
    problems = []
    if not approver.verifies(statement_of(record), record["signature"]):
        problems.append("signature does not match the record (altered or forged)")
    try:
        signed_at = _parse_time(record["signed_at"], "signed_at")
        recorded_at = _parse_time(record.get("recorded_at"), "recorded_at")
        if approver.revoked_by(signed_at) or approver.revoked_by(recorded_at):
            problems.append(f"approver {approver.approver_id} ({approver.name}) was revoked at {approver.revoked_at}, "
                            "before this approval")
    except ApprovalError as exc:
        problems.append(str(exc))
    if record["role"] != approver.role:
        problems.append(f"role {record['role']!r} but approver {approver.approver_id} is registered as "
                        f"{approver.role!r}")
    if record["by"] != approver.name:
        problems.append(f"by {record['by']!r} but approver {approver.approver_id} is {approver.name!r}")
    if record.get("hash") != record_hash(record):
        problems.append("altered since it was recorded (its content does not match its hash)")
    return problems


def _valid(records: Sequence[dict[str, Any]], registry: dict[str, Approver], *, release: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("release") == release and not record_problems(r, registry)]


@dataclass
class ApprovalStatus:
    release: str
    valid: list[dict[str, Any]] = field(default_factory=list)
    # Recorded approvals of the release that carry no authority, each with its "problems".
    invalid: list[dict[str, Any]] = field(default_factory=list)

    @property
    def roles(self) -> list[str]:
        return list(dict.fromkeys(a["role"] for a in self.valid))


def approvals_for(home: Path, release: str, policy: ApprovalPolicy | None = None) -> ApprovalStatus:
    """The release's recorded approvals, split into those that verify against the approver registry and the
    rest with their reasons. With ``policy``, an approval in a role the policy no longer defines is invalid."""
    registry = approvers(home)
    status = ApprovalStatus(release)
    for rec in approvals_ledger(home).records():
        rec = strip_line(rec)
        if rec.get("release") != release:
            continue
        problems = record_problems(rec, registry)
        if policy is not None and rec.get("role") not in policy.roles:
            problems.append(f"role {rec.get('role')!r} is not a role of the approval policy")
        (status.invalid if problems else status.valid).append({**rec, "problems": problems} if problems else rec)
    return status


def missing_roles(policy: ApprovalPolicy, risk_class: RiskClass, approvals: Sequence[dict[str, Any]]) -> list[str]:
    """Roles the class requires that no approval in ``approvals`` (valid ones) covers, in policy order."""
    have = {a.get("role") for a in approvals}
    return [r for r in required_roles(policy, risk_class) if r not in have]


def approval_summary(policy: ApprovalPolicy, risk_class: RiskClass, approvals: Sequence[dict[str, Any]]) -> str:
    """One line for a gate's message and metadata: what is missing, what the class needs, who approved."""
    need = required_roles(policy, risk_class)
    missing = missing_roles(policy, risk_class, approvals)
    done = ", ".join(f"{a['role']} by {a['by']} at {short_time(a['signed_at'])}" for a in approvals) or "none"
    head = f"missing approval by {', '.join(missing)}" if missing else "all required approvals present"
    return f"{head} ({risk_class} risk needs {', '.join(need)}); approved: {done}"


# ---------------------------------------------------------------- audit


def verify_audit(home: Path, expected_heads: dict[str, list[str]] | None = None) -> list[str]:
    """Every problem of the audit trail, each naming file and line; empty means intact. Chain problems of both
    ledgers (``expected_heads`` per ledger: "approvals", "approvers"), then each approval that carries no
    authority: signature mismatch (altered or forged), unknown approver (forged), signed after its approver was
    revoked, role or name not the approver's, a nonce recorded twice (replayed)."""
    heads = expected_heads or {}
    unknown = sorted(set(heads) - {"approvals", "approvers"})
    problems = [f"expected_heads: unknown ledger(s) {unknown} (known: approvals, approvers)"] if unknown else []
    approver_ledger, approval_ledger = approvers_ledger(home), approvals_ledger(home)
    problems += approver_ledger.verify(heads.get("approvers", ()))
    problems += approval_ledger.verify(heads.get("approvals", ()))
    try:
        registry = approvers(home)
        added: dict[str, int] = {}
        for rec in approver_ledger.records():
            where, aid = f"{approver_ledger.path}:{rec['_line']}", rec.get("approver_id")
            if rec.get("kind") == "approver_added":
                if aid in added:
                    problems.append(f"{where}: approver {aid} added again (first at line {added[aid]})")
                added.setdefault(aid, rec["_line"])
                try:
                    Ed25519PublicKey.from_public_bytes(base64.b64decode(str(rec.get("public_key")), validate=True))
                except (ValueError, binascii.Error):
                    problems.append(f"{where}: approver {aid}: public_key is not a base64 Ed25519 public key")
            elif rec.get("kind") == "approver_revoked":
                if aid not in added:
                    problems.append(f"{where}: revokes {aid}, which was not added before it")
            else:
                problems.append(f"{where}: unknown record kind {rec.get('kind')!r}")
        nonces: dict[str, Any] = {}
        for rec in approval_ledger.records():
            line = rec.pop("_line")
            label = f"{approval_ledger.path}:{line}: approval seq {rec.get('seq')} by {rec.get('by')}"
            for problem in record_problems(rec, registry):
                if not problem.startswith("altered since"):  # the chain check above already names it
                    problems.append(f"{label}: {problem}")
            nonce = rec.get("nonce")
            if nonce in nonces:
                problems.append(f"{label}: nonce already recorded by seq {nonces[nonce]} (replayed)")
            nonces.setdefault(nonce, rec.get("seq"))
    except LedgerError:
        pass  # the chain check above names the line that does not parse
    return problems


def audit_counts(home: Path) -> tuple[int, int]:
    """(approvals, approvers) recorded, for the "intact" message."""
    return len(approvals_ledger(home).records()), len(approvers(home))
