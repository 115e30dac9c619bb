from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.auth import ROLE_ACTIONS, AccessDenied, ApiKey, AuthError, KeyStore, KeyStoreError, keys_file
from serving.keys_cli import keys_app

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(keys_file(tmp_path))


def _bump(path: Path) -> None:
    # An in-place rewrite within one mtime tick would look unchanged; the CLI always replaces the file instead.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


# ---- keys and storage ------------------------------------------------------------------------------------------


def test_key_has_documented_format_and_only_its_hash_is_stored(store: KeyStore):
    plaintext, key = store.create("support", use_cases=["support-assistant"], now=NOW)
    match = re.fullmatch(r"agx_([0-9a-f]{10})_([A-Za-z0-9_-]{32,})", plaintext)
    assert match and match.group(1) == key.key_id
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    text = store.path.read_text()
    assert plaintext not in text and match.group(2) not in text
    assert key.key_hash in text
    assert json.loads(text)["version"] == 1


def test_key_file_is_private_and_written_without_leftover_temp_files(store: KeyStore):
    store.create("support", now=NOW)
    store.create("finance", now=NOW)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["keys.json", "keys.json.lock"]


def test_create_defaults_grant_all_domains_but_no_use_case_and_no_direct_model(store: KeyStore):
    _, key = store.create("support", now=NOW)
    assert (key.roles, key.use_cases, key.models, key.data_domains) == (("user",), (), (), ("*",))
    assert key.created_at == "2026-03-10T12:00:00+00:00"
    assert key.expires_at is None and key.revoked_at is None and key.rpm is None
    assert not key.allows_use_case("support-assistant")
    assert not key.allows_model("gemma3-270m")  # direct model access skips a use case's prompt: explicit grant
    assert key.allowed_domains() is None


def test_create_rejects_bad_input_with_clear_messages(store: KeyStore):
    with pytest.raises(ValueError, match="team must be a non-empty name"):
        store.create("  ")
    with pytest.raises(
        ValueError, match=r"unknown role\(s\) \['superuser'\]; known roles: \['admin', 'readonly', 'user'\]"
    ):
        store.create("support", roles=["superuser"])
    with pytest.raises(ValueError, match="at least one role"):
        store.create("support", roles=[])
    with pytest.raises(ValueError, match="rpm must be a positive whole number"):
        store.create("support", rpm=0)
    with pytest.raises(ValueError, match="not both"):
        store.create("support", expires_at=NOW + timedelta(days=1), expires_in_days=3)
    with pytest.raises(ValueError, match="is not in the future"):
        store.create("support", expires_at=NOW - timedelta(days=1), now=NOW)
    assert store.list() == [] and not store.path.exists()


def test_keys_survive_a_new_store_on_the_same_file(store: KeyStore):
    plaintext, key = store.create(
        "support",
        name="bot",
        roles=["user", "readonly"],
        use_cases=["a", "b"],
        models=["m1"],
        data_domains=["crm"],
        expires_in_days=30,
        rpm=60,
        tpm=10_000,
        now=NOW,
    )
    reopened = KeyStore(store.path)
    assert reopened.get(key.key_id) == key
    assert reopened.get(key.key_id).expires_at == "2026-04-09T12:00:00+00:00"
    assert reopened.authenticate(plaintext, now=NOW) == key
    assert reopened.get("0000000000") is None


def test_public_dict_has_no_hash(store: KeyStore):
    _, key = store.create("support", use_cases=["a"], now=NOW)
    public = key.to_public_dict()
    assert "key_hash" not in public and key.key_hash not in json.dumps(public)
    assert public["key_id"] == key.key_id and public["use_cases"] == ["a"]
    assert key.key_hash not in repr(key)


def test_list_is_in_creation_order(store: KeyStore):
    ids = [store.create(team, now=NOW + timedelta(minutes=i))[1].key_id for i, team in enumerate(["b", "a", "c"])]
    assert [k.key_id for k in store.list()] == ids


def test_corrupt_key_file_at_startup_names_the_file(tmp_path: Path):
    path = keys_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(KeyStoreError, match=re.escape(f"key file {path} is not valid JSON")):
        KeyStore(path)
    path.write_text(
        json.dumps({"version": 1, "keys": [{"key_id": "x", "key_hash": "h", "team": "t", "roles": ["root"]}]})
    )
    with pytest.raises(KeyStoreError, match=r"keys\[0\] is invalid: unknown role\(s\) \['root'\]"):
        KeyStore(path)


# ---- authenticate ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("presented", [None, "", "   ", "Bearer "])
def test_missing_key_is_401_missing_api_key(store: KeyStore, presented):
    with pytest.raises(AuthError) as err:
        store.authenticate(presented)
    assert (err.value.status, err.value.code) == (401, "missing_api_key")


def test_unknown_key_is_invalid_and_the_secret_is_never_echoed(store: KeyStore):
    plaintext, key = store.create("support", now=NOW)
    forged = plaintext[:-4] + ("aaaa" if not plaintext.endswith("aaaa") else "bbbb")
    with pytest.raises(AuthError) as err:
        store.authenticate(forged, now=NOW)
    assert err.value.code == "invalid_api_key" and err.value.status == 401
    assert str(err.value) == f"API key {key.key_id} is not known to this gateway"
    with pytest.raises(AuthError, match=r"^API key is not a valid Agenix key \(agx_\.\.\.\)$") as err:
        store.authenticate("sk-some-openai-key", now=NOW)
    assert "sk-some" not in str(err.value)


def test_authenticate_accepts_a_bearer_header_value(store: KeyStore):
    plaintext, key = store.create("support", now=NOW)
    assert store.authenticate(f"Bearer {plaintext}", now=NOW) is key
    assert store.authenticate(f"  {plaintext}\n", now=NOW) is key


def test_expiry_takes_effect_at_the_exact_instant(store: KeyStore):
    plaintext, key = store.create("support", expires_in_days=1, now=NOW)
    end = NOW + timedelta(days=1)
    assert store.authenticate(plaintext, now=end - timedelta(seconds=1)) == key
    assert key.is_active(end - timedelta(seconds=1))
    with pytest.raises(AuthError) as err:
        store.authenticate(plaintext, now=end)
    assert err.value.code == "expired_api_key"
    assert str(err.value) == f"API key {key.key_id} expired at 2026-03-11T12:00:00+00:00"
    assert not key.is_active(end)


def test_revoked_key_is_refused_and_revocation_time_is_kept(store: KeyStore):
    plaintext, key = store.create("support", expires_in_days=1, now=NOW)
    revoked = store.revoke(key.key_id, now=NOW + timedelta(hours=1))
    assert revoked.revoked_at == "2026-03-10T13:00:00+00:00"
    again = store.revoke(key.key_id, now=NOW + timedelta(hours=5))
    assert again.revoked_at == "2026-03-10T13:00:00+00:00"
    with pytest.raises(AuthError) as err:
        store.authenticate(plaintext, now=NOW + timedelta(days=2))  # also expired by then: revoked wins
    assert err.value.code == "revoked_api_key"
    assert KeyStore(store.path).get(key.key_id).revoked_at == "2026-03-10T13:00:00+00:00"


def test_revoking_an_unknown_key_is_a_clear_key_error(store: KeyStore):
    with pytest.raises(KeyError) as err:
        store.revoke("deadbeef00")
    assert err.value.args[0] == f"no API key with id 'deadbeef00' in {store.path}"


# ---- reload ----------------------------------------------------------------------------------------------------


def test_gateway_sees_keys_created_and_revoked_by_another_process(tmp_path: Path):
    gateway = KeyStore(keys_file(tmp_path))
    cli = KeyStore(keys_file(tmp_path))  # what the CLI process holds
    assert gateway.reload_if_changed() is False
    plaintext, key = cli.create("support", now=NOW)
    assert gateway.reload_if_changed() is True
    assert gateway.authenticate(plaintext, now=NOW).key_id == key.key_id
    assert gateway.reload_if_changed() is False  # unchanged: nothing re-read
    cli.revoke(key.key_id, now=NOW)
    assert gateway.reload_if_changed() is True
    with pytest.raises(AuthError, match="revoked"):
        gateway.authenticate(plaintext, now=NOW)


def test_same_size_rewrite_is_still_noticed(tmp_path: Path):
    gateway = KeyStore(keys_file(tmp_path))
    _, key = gateway.create("aaaa", now=NOW)
    text = gateway.path.read_text()
    gateway.path.write_text(text.replace('"team": "aaaa"', '"team": "bbbb"'))  # in place: same size and inode
    _bump(gateway.path)
    assert gateway.reload_if_changed() is True
    assert gateway.get(key.key_id).team == "bbbb"


def test_two_writers_do_not_lose_each_others_keys(tmp_path: Path):
    first, second = KeyStore(keys_file(tmp_path)), KeyStore(keys_file(tmp_path))
    _, a = first.create("a", now=NOW)
    _, b = second.create("b", now=NOW)  # second's in-memory view predates a: it must re-read before writing
    assert {k.key_id for k in KeyStore(keys_file(tmp_path)).list()} == {a.key_id, b.key_id}


def test_corrupt_file_on_reload_keeps_previous_keys_and_logs_the_file(store: KeyStore, caplog):
    plaintext, key = store.create("support", now=NOW)
    store.path.write_text('{"version": 1, "keys": [')
    with caplog.at_level(logging.ERROR, logger="serving.auth"):
        assert store.reload_if_changed() is False
    assert store.authenticate(plaintext, now=NOW) == key
    assert str(store.path) in caplog.text and "not valid JSON" in caplog.text
    caplog.clear()
    assert store.reload_if_changed() is False and caplog.text == ""  # the same broken file is not re-parsed


def test_deleted_key_file_means_no_key_is_accepted(store: KeyStore):
    plaintext, _ = store.create("support", now=NOW)
    store.path.unlink()
    assert store.reload_if_changed() is True
    with pytest.raises(AuthError) as err:
        store.authenticate(plaintext, now=NOW)
    assert err.value.code == "invalid_api_key"


# ---- authorize -------------------------------------------------------------------------------------------------


def test_role_actions_match_the_documented_matrix():
    assert ROLE_ACTIONS["user"] == {"chat", "embeddings", "models", "feedback"}
    assert ROLE_ACTIONS["admin"] == {"chat", "embeddings", "models", "feedback"}
    assert ROLE_ACTIONS["readonly"] == {"models", "feedback"}


def test_readonly_key_may_list_models_but_not_chat(store: KeyStore):
    _, key = store.create("audit", roles=["readonly"], use_cases=["*"], now=NOW)
    store.authorize(key, "models", now=NOW)
    store.authorize(key, "feedback", now=NOW)
    for action in ("chat", "embeddings"):
        with pytest.raises(AccessDenied) as err:
            store.authorize(key, action, use_case="support-assistant", now=NOW)
        assert (err.value.status, err.value.code) == (403, "permission_denied")
        assert str(err.value) == (
            f"API key {key.key_id} (roles readonly) may not use {action}; that needs one of the roles admin, user"
        )


def test_use_case_and_model_grants_are_enforced_and_named(store: KeyStore):
    _, key = store.create("support", use_cases=["support-assistant"], models=["gemma3-270m"], now=NOW)
    store.authorize(key, "chat", use_case="support-assistant", model="gemma3-270m", now=NOW)
    with pytest.raises(
        AccessDenied,
        match=f"^API key {key.key_id} is not granted use case 'sales-assistant' "
        r"\(granted: support-assistant\)$",
    ):
        store.authorize(key, "chat", use_case="sales-assistant", now=NOW)
    with pytest.raises(
        AccessDenied,
        match=f"^API key {key.key_id} is not granted model 'llama-70b' "
        r"\(granted: gemma3-270m\)$",
    ):
        store.authorize(key, "chat", use_case="support-assistant", model="llama-70b", now=NOW)


def test_key_without_use_cases_cannot_chat_with_any(store: KeyStore):
    _, key = store.create("support", now=NOW)
    with pytest.raises(AccessDenied, match=r"\(granted: none\)"):
        store.authorize(key, "chat", use_case="support-assistant", now=NOW)


def test_wildcards_grant_everything(store: KeyStore):
    _, key = store.create("support", use_cases=["*"], models=["*"], now=NOW)
    store.authorize(key, "chat", use_case="anything", model="any-model", now=NOW)


def test_admin_may_use_every_model_and_use_case_but_keeps_its_data_domains(store: KeyStore):
    _, key = store.create("platform", roles=["admin"], models=["m1"], data_domains=["crm"], now=NOW)
    store.authorize(key, "chat", use_case="support-assistant", model="other-model", now=NOW)
    assert key.allows_model("other-model") and key.allows_use_case("x")
    assert key.allowed_domains() == ("crm",)


def test_empty_data_domains_grant_no_data(store: KeyStore):
    _, key = store.create("support", data_domains=[], now=NOW)
    assert key.allowed_domains() == ()


def test_authorize_refuses_a_key_revoked_since_it_was_authenticated(store: KeyStore):
    plaintext, _ = store.create("support", use_cases=["*"], now=NOW)
    held = store.authenticate(plaintext, now=NOW)
    revoked = store.revoke(held.key_id, now=NOW)
    store.authorize(held, "chat", now=NOW)  # the held object is a snapshot: still active
    with pytest.raises(AuthError) as err:
        store.authorize(revoked, "chat", now=NOW)
    assert err.value.code == "revoked_api_key"


def test_unknown_action_is_a_programming_error(store: KeyStore):
    _, key = store.create("support", now=NOW)
    with pytest.raises(ValueError, match=r"unknown action 'delete'"):
        store.authorize(key, "delete", now=NOW)


def test_errors_map_to_openai_error_bodies():
    body = AccessDenied("API key abc may not use chat").to_openai_error()
    assert body == {
        "error": {
            "message": "API key abc may not use chat",
            "type": "permission_error",
            "param": None,
            "code": "permission_denied",
        }
    }
    with pytest.raises(ValueError, match="unknown auth error code 'bad_key'"):
        AuthError("x", "bad_key")


def test_api_key_from_record_rejects_unknown_roles():
    with pytest.raises(ValueError, match=r"unknown role\(s\) \['root'\] for key k1"):
        ApiKey(key_id="k1", key_hash="h", team="t", roles=("root",))


# ---- CLI -------------------------------------------------------------------------------------------------------


runner = CliRunner()


def _cli(tmp_path: Path, *args: str):
    return runner.invoke(keys_app, [*args, "--home", str(tmp_path)])


def test_cli_create_json_prints_one_object_with_the_key_that_authenticates(tmp_path: Path):
    result = _cli(tmp_path, "create", "--team", "support", "--use-case", "support-assistant", "--json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["team"] == "support" and created["use_cases"] == ["support-assistant"]
    assert created["status"] == "active" and "key_hash" not in created
    key = KeyStore(keys_file(tmp_path)).authenticate(created["key"])
    assert key.key_id == created["key_id"]


def test_cli_create_takes_every_grant(tmp_path: Path):
    result = _cli(
        tmp_path,
        "create",
        "--team",
        "sales",
        "--name",
        "crm bot",
        "--role",
        "user",
        "--role",
        "readonly",
        "--use-case",
        "a",
        "--use-case",
        "b",
        "--model",
        "m1",
        "--domain",
        "crm",
        "--domain",
        "erp",
        "--expires-in-days",
        "7",
        "--rpm",
        "30",
        "--tpm",
        "5000",
        "--json",
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    key = KeyStore(keys_file(tmp_path)).get(created["key_id"])
    assert (key.name, key.roles, key.use_cases, key.models, key.data_domains, key.rpm, key.tpm) == (
        "crm bot",
        ("user", "readonly"),
        ("a", "b"),
        ("m1",),
        ("crm", "erp"),
        30,
        5000,
    )
    created_at = datetime.fromisoformat(key.created_at)
    assert datetime.fromisoformat(key.expires_at) - created_at == timedelta(days=7)


def test_cli_create_text_shows_the_key_once_with_a_warning(tmp_path: Path):
    result = _cli(tmp_path, "create", "--team", "support")
    assert result.exit_code == 0, result.output
    plaintext = re.search(r"^key:\s+(agx_\S+)$", result.stdout, re.MULTILINE).group(1)
    assert "only time the key is shown" in result.stdout
    assert "no use case granted, so this key cannot chat" in result.stdout
    assert KeyStore(keys_file(tmp_path)).authenticate(plaintext).team == "support"


def test_cli_create_bad_role_exits_1_with_the_reason(tmp_path: Path):
    result = _cli(tmp_path, "create", "--team", "support", "--role", "root")
    assert result.exit_code == 1
    assert "error: unknown role(s) ['root']; known roles: ['admin', 'readonly', 'user']" in result.stderr


def test_cli_list_shows_status_and_never_hashes(tmp_path: Path):
    store = KeyStore(keys_file(tmp_path))
    _, active = store.create("support", name="bot", use_cases=["a"])
    _, gone = store.create("finance")
    store.revoke(gone.key_id)
    _, old = store.create("ops", expires_at=datetime.now(UTC) + timedelta(seconds=1))
    path = store.path
    data = json.loads(path.read_text())
    for record in data["keys"]:  # age the third key past its expiry without sleeping
        if record["key_id"] == old.key_id:
            record["expires_at"] = "2020-01-01T00:00:00+00:00"
    path.write_text(json.dumps(data))

    result = _cli(tmp_path, "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "KEY_ID",
        "TEAM",
        "NAME",
        "ROLES",
        "USE",
        "CASES",
        "MODELS",
        "DOMAINS",
        "CREATED",
        "EXPIRES",
        "STATUS",
    ]
    status = {line.split()[0]: line.split()[-1] for line in lines[1:]}
    assert status == {active.key_id: "active", gone.key_id: "revoked", old.key_id: "expired"}
    for key in (active, gone, old):
        assert key.key_hash not in result.stdout

    listed = json.loads(_cli(tmp_path, "list", "--json").stdout)
    assert [(k["key_id"], k["status"]) for k in listed] == [
        (active.key_id, "active"),
        (gone.key_id, "revoked"),
        (old.key_id, "expired"),
    ]
    assert all("key_hash" not in k and "key" not in k for k in listed)


def test_cli_revoke_then_unknown_id_exits_1(tmp_path: Path):
    created = json.loads(_cli(tmp_path, "create", "--team", "support", "--json").stdout)
    result = _cli(tmp_path, "revoke", created["key_id"])
    assert result.exit_code == 0 and f"revoked key {created['key_id']} (team support)" in result.stdout
    assert KeyStore(keys_file(tmp_path)).get(created["key_id"]).revoked_at is not None
    result = _cli(tmp_path, "revoke", "0123456789")
    assert result.exit_code == 1
    assert f"error: no API key with id '0123456789' in {keys_file(tmp_path.resolve())}" in result.stderr


def test_cli_uses_agenix_home_when_no_home_option(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AGENIX_HOME", str(tmp_path / "home"))
    result = runner.invoke(keys_app, ["create", "--team", "support", "--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / "gateway" / "keys.json").exists()
