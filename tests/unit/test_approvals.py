"""Release approvals (core/approvals.py, `agenix approvers|approve|audit`): signed by the approver's own key,
recorded once in an append-only hash-chained ledger, and every edit, deletion or forgery of the trail detected.
Real Ed25519 keys and real ledger files in tmp_path."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from agenix_assets.cli import app
from agenix_assets.core import approvals as ap
from agenix_assets.core.config import ConfigError
from agenix_assets.core.ledger import canonical, record_hash

REPO = Path(__file__).resolve().parents[2]
RELEASE = "support-assistant-1a2b3c4d"
FIELDS = {"use_case": "support-assistant", "release": RELEASE, "release_hash": "ab" * 32}


@pytest.fixture
def policy() -> ap.ApprovalPolicy:
    return ap.load_approval_policy(REPO / "config")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def lena(home, policy) -> tuple[ap.Approver, str]:
    return ap.add_approver(home, "Lena Brandt", "product_owner", "admin", policy)


@pytest.fixture
def marco(home, policy) -> tuple[ap.Approver, str]:
    return ap.add_approver(home, "Marco Rossi", "llm_lead", "admin", policy)


def _sign(credential: str, role: str, by: str, note: str = "checked the eval report", **kw) -> dict:
    return ap.sign_approval(credential, **FIELDS, role=role, by=by, note=note,
                            channel=kw.pop("channel", "launchpad"), ttl_hours=kw.pop("ttl_hours", 24), **kw)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# ---------------------------------------------------------------- policy


def test_shipped_policy_requires_more_roles_as_risk_grows(policy):
    assert ap.required_roles(policy, "low") == ["product_owner"]
    assert ap.required_roles(policy, "medium") == ["product_owner", "llm_lead"]
    assert ap.required_roles(policy, "high") == ["product_owner", "llm_lead", "risk_officer"]
    assert policy.risk_classes.high.dpia_required and not policy.risk_classes.medium.dpia_required
    assert policy.separation_of_duties and policy.token_ttl_hours == 24


def test_a_required_role_the_policy_does_not_define_names_file_and_line(config_dir):
    path = config_dir / "governance" / "approval_policy.yaml"
    text = path.read_text().replace("llm_lead, risk_officer]", "llm_lead, risk_oficer]")
    path.write_text(text)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "risk_oficer" in t)
    with pytest.raises(ConfigError, match=rf"{path}:{line}: risk_classes.high.roles: role 'risk_oficer' is not "
                                          "defined under roles"):
        ap.load_approval_policy(config_dir)


def test_a_policy_without_a_risk_class_names_the_missing_key(config_dir):
    path = config_dir / "governance" / "approval_policy.yaml"
    path.write_text("\n".join(t for t in path.read_text().splitlines() if not t.startswith("  low:")))
    with pytest.raises(ConfigError, match=r"risk_classes.low: required key is missing"):
        ap.load_approval_policy(config_dir)


# ---------------------------------------------------------------- approvers and credentials


def test_added_approver_is_registered_with_only_its_public_key(home, lena):
    approver, credential = lena
    assert approver.approver_id.startswith("apr_") and len(approver.approver_id) == 14
    assert credential.startswith(f"agxp_{approver.approver_id}_")
    registered = ap.approvers(home)[approver.approver_id]
    assert (registered.name, registered.role, registered.revoked_at) == ("Lena Brandt", "product_owner", None)
    stored = (home / "audit" / "approvers.jsonl").read_text()
    assert credential.rsplit("_", 1)[1] not in stored and approver.public_key in stored
    # the credential holds the private key of exactly that public key
    approver_id, key = ap.load_credential(credential)
    assert approver_id == approver.approver_id
    assert base64.b64encode(key.public_key().public_bytes_raw()).decode() == approver.public_key


def test_credential_file_works_like_the_string(tmp_path, lena):
    approver, credential = lena
    path = tmp_path / "lena.cred"
    path.write_text(credential + "\n")
    assert ap.load_credential(path)[0] == approver.approver_id


def test_malformed_credential_is_refused_without_echoing_it(tmp_path, lena):
    _, credential = lena
    bad = tmp_path / "bad.cred"
    bad.write_text(credential[:-3])
    with pytest.raises(ap.ApprovalError, match=rf"{bad}: not an approver credential") as err:
        ap.load_credential(bad)
    assert credential[-40:-3] not in str(err.value)
    with pytest.raises(ap.ApprovalError, match=r"credential: neither a credential .* nor a readable file"):
        ap.load_credential(tmp_path / "missing.cred")


def test_role_outside_the_policy_cannot_be_registered(home, policy):
    with pytest.raises(ap.ApprovalError, match=r"role: 'ceo' is not a role of the approval policy.*product_owner"):
        ap.add_approver(home, "Ada", "ceo", "admin", policy)


# ---------------------------------------------------------------- recording


def test_cli_approval_signed_by_the_credential_is_recorded_and_verifies(home, policy, lena):
    approver, credential = lena
    stored = ap.approve(home, credential, policy, **FIELDS, role="product_owner", by="Lena Brandt", note="KPIs met")
    assert (stored["seq"], stored["channel"], stored["approver_id"], stored["note"]) == (
        1, "cli", approver.approver_id, "KPIs met")
    status = ap.approvals_for(home, RELEASE, policy)
    assert [(a["role"], a["by"], a["seq"], a["hash"]) for a in status.valid] == [
        ("product_owner", "Lena Brandt", 1, stored["hash"])]
    assert status.invalid == []
    assert ap.approvals_for(home, "support-assistant-ffffffff").valid == []


def test_launchpad_token_round_trip_records_when_the_form_matches(home, policy, lena):
    token = ap.encode_token(_sign(lena[1], "product_owner", "Lena Brandt", note="ok to ship"))
    assert token.startswith("agxa_") and "\n" not in token
    form = {"release": RELEASE, "role": "product_owner", "by": "Lena Brandt", "note": "ok to ship"}
    stored = ap.record_approval(home, ap.decode_token(token), policy, expected=form, run_id="run-42")
    assert (stored["channel"], stored["run_id"], stored["seq"]) == ("launchpad", "run-42", 1)


def test_token_whose_note_differs_from_the_form_is_refused_naming_note(home, policy, lena):
    signed = ap.decode_token(ap.encode_token(_sign(lena[1], "product_owner", "Lena Brandt", note="ok to ship")))
    form = {"release": RELEASE, "role": "product_owner", "by": "Lena Brandt", "note": "ok to ship, after fixes"}
    with pytest.raises(ap.ApprovalError, match=r"^note: the token says 'ok to ship' but the form says"):
        ap.record_approval(home, signed, policy, expected=form)
    assert ap.approvals_for(home, RELEASE).valid == []


def test_garbage_token_is_a_clear_error():
    with pytest.raises(ap.ApprovalError, match=r"token: not an approval token"):
        ap.decode_token("hello")
    with pytest.raises(ap.ApprovalError, match=r"token: damaged"):
        ap.decode_token("agxa_!!!notbase64")
    with pytest.raises(ap.ApprovalError, match=r"statement: missing .*signature"):
        ap.decode_token(ap.encode_token({"kind": "approval"}))


def test_expired_token_is_refused(home, policy, lena):
    signed = _sign(lena[1], "product_owner", "Lena Brandt", now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=25))
    with pytest.raises(ap.ApprovalError, match=r"^expires_at: the approval expired at"):
        ap.record_approval(home, signed, policy)


def test_token_valid_longer_than_the_policy_allows_is_refused(home, policy, lena):
    signed = _sign(lena[1], "product_owner", "Lena Brandt", ttl_hours=24 * 7)
    with pytest.raises(ap.ApprovalError, match=r"^expires_at: valid for 168 h; the policy allows at most"):
        ap.record_approval(home, signed, policy)


def test_a_token_is_recorded_once(home, policy, lena):
    signed = _sign(lena[1], "product_owner", "Lena Brandt")
    ap.record_approval(home, signed, policy)
    with pytest.raises(ap.ApprovalError, match=r"^nonce: this approval was already recorded \(seq 1\)"):
        ap.record_approval(home, dict(signed), policy)
    assert len(_lines(home / "audit" / "approvals.jsonl")) == 1


def test_a_credential_cannot_approve_in_another_role(home, policy, lena):
    signed = _sign(lena[1], "llm_lead", "Lena Brandt")
    with pytest.raises(ap.ApprovalError, match=r"^role: Lena Brandt's credential apr_\w+ is registered for "
                                               r"'product_owner', so it cannot approve as 'llm_lead'"):
        ap.record_approval(home, signed, policy)


def test_a_credential_cannot_sign_another_persons_name(home, policy, lena):
    with pytest.raises(ap.ApprovalError, match=r"^by: credential apr_\w+ belongs to 'Lena Brandt', not 'Marco'"):
        ap.record_approval(home, _sign(lena[1], "product_owner", "Marco"), policy)


def test_a_statement_altered_after_signing_is_refused(home, policy, lena):
    signed = _sign(lena[1], "product_owner", "Lena Brandt")
    with pytest.raises(ap.ApprovalError, match=r"^signature: does not verify"):
        ap.record_approval(home, {**signed, "release": "support-assistant-99999999"}, policy)


def test_a_key_nobody_registered_is_refused(home, policy, lena):
    forged = f"agxp_apr_0000000000_{base64.urlsafe_b64encode(bytes(32)).rstrip(b'=').decode()}"
    with pytest.raises(ap.ApprovalError, match=r"^approver_id: 'apr_0000000000' is not a registered approver"):
        ap.record_approval(home, _sign(forged, "product_owner", "Lena Brandt"), policy)


def test_revoked_approver_cannot_approve_but_its_earlier_approval_stays_valid(home, policy, lena):
    approver, credential = lena
    earlier = ap.approve(home, credential, policy, **FIELDS, role="product_owner", by="Lena Brandt", note="ok")
    ap.revoke_approver(home, approver.approver_id, "admin", "left the company")
    with pytest.raises(ap.ApprovalError, match=r"^approver_id: apr_\w+ \(Lena Brandt, product_owner\) was revoked "
                                               r"at .* \(left the company\)"):
        ap.approve(home, credential, policy, **{**FIELDS, "release": "support-assistant-22222222"},
                   role="product_owner", by="Lena Brandt", note="late")
    assert [a["hash"] for a in ap.approvals_for(home, RELEASE).valid] == [earlier["hash"]]
    assert ap.verify_audit(home) == []


def test_a_token_signed_before_revocation_is_not_recorded_after_it(home, policy, lena):
    """Otherwise a revoked credential could backdate signed_at and still approve."""
    signed = _sign(lena[1], "product_owner", "Lena Brandt")
    ap.revoke_approver(home, lena[0].approver_id, "admin", "credential leaked")
    with pytest.raises(ap.ApprovalError, match=r"^approver_id: .* was revoked at .* \(credential leaked\)"):
        ap.record_approval(home, signed, policy)


def test_one_person_approves_a_release_in_one_role_only(home, policy, lena):
    _, as_llm_lead = ap.add_approver(home, "Lena Brandt", "llm_lead", "admin", policy)
    ap.approve(home, lena[1], policy, **FIELDS, role="product_owner", by="Lena Brandt", note="ok")
    with pytest.raises(ap.ApprovalError, match=r"^by: Lena Brandt already approved support-assistant-1a2b3c4d as "
                                               r"product_owner \(seq 1\); separation_of_duties"):
        ap.approve(home, as_llm_lead, policy, **FIELDS, role="llm_lead", by="Lena Brandt", note="also ok")
    lenient = policy.model_copy(update={"separation_of_duties": False})
    ap.approve(home, as_llm_lead, lenient, **FIELDS, role="llm_lead", by="Lena Brandt", note="also ok")
    assert ap.approvals_for(home, RELEASE).roles == ["product_owner", "llm_lead"]


def test_medium_risk_with_only_the_product_owner_misses_the_llm_lead(home, policy, lena, marco):
    ap.approve(home, lena[1], policy, **FIELDS, role="product_owner", by="Lena Brandt", note="ok",
               now=dt.datetime(2026, 12, 8, 10, 0, tzinfo=dt.UTC))
    valid = ap.approvals_for(home, RELEASE, policy).valid
    assert ap.missing_roles(policy, "medium", valid) == ["llm_lead"]
    assert ap.missing_roles(policy, "low", valid) == []
    assert ap.approval_summary(policy, "medium", valid) == (
        "missing approval by llm_lead (medium risk needs product_owner, llm_lead); "
        "approved: product_owner by Lena Brandt at 2026-12-08T10:00:00Z")
    ap.approve(home, marco[1], policy, **FIELDS, role="llm_lead", by="Marco Rossi", note="evals pass")
    assert ap.missing_roles(policy, "medium", ap.approvals_for(home, RELEASE).valid) == []


# ---------------------------------------------------------------- tamper evidence


@pytest.fixture
def trail(home, policy, lena, marco) -> Path:
    """Three recorded approvals of two releases, the trail intact."""
    ap.approve(home, lena[1], policy, **FIELDS, role="product_owner", by="Lena Brandt", note="KPIs met")
    ap.approve(home, marco[1], policy, **FIELDS, role="llm_lead", by="Marco Rossi", note="evals pass")
    ap.approve(home, lena[1], policy, **{**FIELDS, "release": "support-assistant-33333333"},
               role="product_owner", by="Lena Brandt", note="next one")
    assert ap.verify_audit(home) == []
    return home / "audit" / "approvals.jsonl"


def test_editing_a_note_in_place_breaks_its_hash_and_its_signature(home, trail):
    lines = _lines(trail)
    lines[1] = lines[1].replace('"evals pass"', '"evals pass (waived)"')
    trail.write_text("\n".join(lines) + "\n")
    problems = ap.verify_audit(home)
    assert f"{trail}:2: record 2 was altered (its content does not match its hash)" in problems
    assert (f"{trail}:2: approval seq 2 by Marco Rossi: signature does not match the record (altered or forged)"
            in problems)
    assert len(problems) == 2
    assert [a["problems"] for a in ap.approvals_for(home, RELEASE).invalid] == [[
        "signature does not match the record (altered or forged)",
        "altered since it was recorded (its content does not match its hash)"]]


def test_deleting_a_middle_record_is_detected(home, trail):
    lines = _lines(trail)
    trail.write_text("\n".join([lines[0], lines[2]]) + "\n")
    problems = ap.verify_audit(home)
    assert any(p.startswith(f"{trail}:2: record 3 does not follow the record before it") for p in problems)
    assert any("sequence jumps from 1 to 3" in p for p in problems)


def test_deleting_the_newest_record_is_detected_against_a_head_recorded_elsewhere(home, trail):
    head = json.loads(_lines(trail)[-1])["hash"]
    trail.write_text("\n".join(_lines(trail)[:-1]) + "\n")
    assert ap.verify_audit(home) == []  # a shorter chain is a valid chain ...
    problems = ap.verify_audit(home, {"approvals": [head]})
    assert problems == [f"{trail}: record {head[:16]}... that other evidence refers to is missing (the newest "
                        "records were deleted or the ledger was replaced)"]


def _append_with_valid_chain(ledger_file: Path, statement: dict, key: Ed25519PrivateKey) -> None:
    """What a forger with write access does: sign with a key of their own and recompute the chain."""
    last = json.loads(_lines(ledger_file)[-1])
    signature = base64.b64encode(key.sign(canonical(statement))).decode()
    record = {**statement, "signature": signature, "recorded_at": statement["signed_at"], "run_id": None,
              "seq": last["seq"] + 1, "prev": last["hash"]}
    record["hash"] = record_hash(record)
    with ledger_file.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def test_a_forged_record_with_a_valid_chain_is_detected_by_its_signature(home, trail, marco):
    statement = ap.statement_of(json.loads(_lines(trail)[1]))
    statement.update(release="support-assistant-33333333", nonce="f" * 32)
    _append_with_valid_chain(trail, statement, Ed25519PrivateKey.generate())  # Marco's id, not Marco's key
    assert ap.verify_audit(home) == [
        f"{trail}:4: approval seq 4 by Marco Rossi: signature does not match the record (altered or forged)"]
    assert ap.approvals_for(home, "support-assistant-33333333").roles == ["product_owner"]


def test_a_forged_record_by_an_unregistered_approver_is_detected(home, trail):
    statement = {**ap.statement_of(json.loads(_lines(trail)[1])), "approver_id": "apr_0123456789",
                 "by": "Mallory", "nonce": "e" * 32}
    _append_with_valid_chain(trail, statement, Ed25519PrivateKey.generate())
    assert ap.verify_audit(home) == [
        f"{trail}:4: approval seq 4 by Mallory: approver apr_0123456789 is not registered (forged)"]


def test_a_record_signed_after_its_approver_was_revoked_is_detected(home, trail, lena):
    ap.revoke_approver(home, lena[0].approver_id, "admin", "left the company")
    statement = {**ap.statement_of(json.loads(_lines(trail)[0])), "release": "support-assistant-44444444",
                 "signed_at": dt.datetime.now(dt.UTC).isoformat(), "nonce": "d" * 32}
    _append_with_valid_chain(trail, statement, ap.load_credential(lena[1])[1])  # Lena's real, revoked key
    problems = ap.verify_audit(home)
    assert len(problems) == 1
    assert problems[0].startswith(f"{trail}:4: approval seq 4 by Lena Brandt: approver {lena[0].approver_id} "
                                  "(Lena Brandt) was revoked at ")
    assert [a["seq"] for a in ap.approvals_for(home, RELEASE).valid] == [1, 2]  # signed before: still valid


def test_a_replayed_record_is_detected(home, trail):
    replay = ap.statement_of(json.loads(_lines(trail)[0]))
    original = json.loads(_lines(trail)[0])
    last = json.loads(_lines(trail)[-1])
    record = {**replay, "signature": original["signature"], "recorded_at": original["recorded_at"], "run_id": None,
              "seq": last["seq"] + 1, "prev": last["hash"]}
    record["hash"] = record_hash(record)
    with trail.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    assert ap.verify_audit(home) == [
        f"{trail}:4: approval seq 4 by Lena Brandt: nonce already recorded by seq 1 (replayed)"]


# ---------------------------------------------------------------- command line


def _write_report(home: Path, release: str = RELEASE, passed: bool = True) -> None:
    folder = home / "eval" / "support-assistant" / release
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({
        "use_case": "support-assistant", "candidate_id": release, "candidate_hash": "cd" * 32, "passed": passed}))


def _run(home: Path, *args: str, **env: str):
    return CliRunner().invoke(app, list(args), env={"AGENIX_HOME": str(home), "COLUMNS": "200", **env})


def test_cli_adds_lists_and_revokes_approvers(home):
    added = _run(home, "approvers", "add", "--name", "Lena Brandt", "--role", "product_owner", "--by", "admin")
    assert added.exit_code == 0, added.output
    approver_id = next(line.split()[1] for line in added.output.splitlines() if line.startswith("approver_id:"))
    cred = home / "audit" / "credentials" / f"{approver_id}.cred"
    assert f"credential:  {cred}" in added.output and "Hand this file to Lena Brandt; it is shown once" in added.output
    assert cred.stat().st_mode & 0o777 == 0o600
    assert ap.load_credential(cred)[0] == approver_id
    listed = json.loads(_run(home, "approvers", "list", "--json").output)
    assert [(a["approver_id"], a["name"], a["role"], a["revoked_at"]) for a in listed] == [
        (approver_id, "Lena Brandt", "product_owner", None)]
    revoked = _run(home, "approvers", "revoke", approver_id, "--by", "admin", "--reason", "lost laptop")
    assert revoked.exit_code == 0, revoked.output
    assert ap.approvers(home)[approver_id].revoked_reason == "lost laptop"
    assert ": lost laptop" in _run(home, "approvers", "list").output
    bad = _run(home, "approvers", "add", "--name", "X", "--role", "ceo")
    assert bad.exit_code == 1 and "role: 'ceo' is not a role of the approval policy" in bad.output


def test_cli_approves_an_evaluated_release_and_records_it(home, policy, lena):
    _write_report(home)
    result = _run(home, "approve", RELEASE, "--role", "product_owner", "--by", "Lena Brandt", "--note", "KPIs met",
                  AGENIX_APPROVER_CREDENTIAL=lena[1])
    assert result.exit_code == 0, result.output
    stored = ap.approvals_for(home, RELEASE).valid
    assert [(a["release_hash"], a["channel"], a["note"]) for a in stored] == [("cd" * 32, "cli", "KPIs met")]
    assert f"seq 1, hash {stored[0]['hash']}" in result.output
    assert "missing approval by llm_lead (medium risk needs product_owner, llm_lead)" in result.output


def test_cli_refuses_a_release_nobody_evaluated_or_that_failed(home, lena):
    result = _run(home, "approve", RELEASE, "--role", "product_owner", "--by", "Lena Brandt", "--note", "x",
                  "--credential", lena[1])
    assert result.exit_code == 1
    assert f"release {RELEASE} has no evaluation report under {home / 'eval'}: evaluate it first" in result.output
    _write_report(home, passed=False)
    result = _run(home, "approve", RELEASE, "--role", "product_owner", "--by", "Lena Brandt", "--note", "x",
                  "--credential", lena[1])
    assert result.exit_code == 1 and "did not pass its evaluation" in result.output
    assert not (home / "audit" / "approvals.jsonl").exists()


def test_cli_token_only_signs_and_the_launchpad_side_records_it(home, policy, marco):
    _write_report(home)
    result = _run(home, "approve", RELEASE, "--role", "llm_lead", "--by", "Marco Rossi", "--note", "evals pass",
                  "--credential", marco[1], "--token")
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.startswith("agxa_") and len(result.output.splitlines()) == 1
    assert not (home / "audit" / "approvals.jsonl").exists()
    form = {"release": RELEASE, "role": "llm_lead", "by": "Marco Rossi", "note": "evals pass"}
    stored = ap.record_approval(home, ap.decode_token(token), policy, expected=form, run_id="r1")
    assert (stored["channel"], stored["release_hash"]) == ("launchpad", "cd" * 32)


def test_cli_audit_verify_exits_1_on_tamper_and_0_when_intact(home, trail):
    intact = _run(home, "audit", "verify")
    assert intact.exit_code == 0, intact.output
    assert "audit trail intact: 3 approvals, 2 approvers" in intact.output
    trail.write_text(trail.read_text().replace('"KPIs met"', '"KPIs not met"'))
    broken = _run(home, "audit", "verify")
    assert broken.exit_code == 1
    assert f"{trail}:1: approval seq 1 by Lena Brandt: signature does not match the record" in broken.output
    report = json.loads(_run(home, "audit", "verify", "--json").output)
    assert report["intact"] is False and len(report["problems"]) == 2
