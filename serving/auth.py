"""Gateway API keys: `agx_<key_id>_<secret>` keys, of which only a SHA-256 hash is stored, with per-key grants.

A key carries roles (which actions), use cases and models (which targets) and data domains (which governed data
retrieval may read). `KeyStore` keeps them in one JSON file that the `agenix keys` CLI writes and the gateway
re-reads when it changes, so keys created or revoked from another process take effect without a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:  # serialises read-modify-write between two CLI processes; absent on Windows, where we do without
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

KEY_PREFIX = "agx_"
KEY_ID_HEX_CHARS = 10
SECRET_BYTES = 32  # token_urlsafe(32) gives 43 characters, 256 bits
KEYS_FILE_VERSION = 1
_KEY_RE = re.compile(r"agx_([0-9a-f]{10})_[A-Za-z0-9_-]{32,}")

ALL = "*"
ACTIONS = frozenset({"chat", "embeddings", "models", "feedback"})
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "user": frozenset({"chat", "embeddings", "models", "feedback"}),
    "admin": ACTIONS,  # admin also bypasses the use-case and model grants (see ApiKey.allows_*)
    "readonly": frozenset({"models", "feedback"}),
}

AUTH_ERROR_CODES = frozenset({"missing_api_key", "invalid_api_key", "expired_api_key", "revoked_api_key"})


def keys_file(home: Path) -> Path:
    """Where the gateway and `agenix keys` keep the key file, under AGENIX_HOME."""
    return home / "gateway" / "keys.json"


def hash_key(key: str) -> str:
    # Keys are 256-bit random secrets, not passwords: nothing to brute-force, so a fast unsalted hash is right
    # and lets authenticate() find the key with one dict lookup instead of a slow KDF per request.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return _as_utc(moment).isoformat(timespec="seconds")


def _as_utc(moment: datetime) -> datetime:
    # Naive datetimes are taken as UTC: every timestamp this module writes is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_iso(value: str, what: str) -> datetime:
    try:
        return _as_utc(datetime.fromisoformat(value))
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an ISO 8601 date or datetime, not {value!r}") from None


class GatewayAccessError(Exception):
    """Base of the errors the gateway turns into OpenAI-shaped error responses (`status`, `code`, message)."""

    status = 500
    error_type = "api_error"

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code

    def to_openai_error(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": None, "code": self.code}}


class AuthError(GatewayAccessError):
    """No usable key: missing, unknown, expired or revoked (HTTP 401)."""

    status = 401
    error_type = "authentication_error"

    def __init__(self, message: str, code: str):
        if code not in AUTH_ERROR_CODES:
            raise ValueError(f"unknown auth error code {code!r}; expected one of {sorted(AUTH_ERROR_CODES)}")
        super().__init__(message, code)


class AccessDenied(GatewayAccessError):
    """A valid key asked for something it was not granted (HTTP 403)."""

    status = 403
    error_type = "permission_error"

    def __init__(self, message: str, code: str = "permission_denied"):
        super().__init__(message, code)


class KeyStoreError(ValueError):
    """The key file cannot be read or has an invalid record; the message names the file."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    key_hash: str = field(repr=False)  # kept out of logs all the same
    team: str
    name: str | None = None
    roles: tuple[str, ...] = ("user",)
    # Empty use_cases grants none (the key may list models but not chat); "*" grants all.
    use_cases: tuple[str, ...] = ()
    # Direct model access bypasses a use case's prompt and retrieval, so it is granted explicitly; none by default.
    models: tuple[str, ...] = ()
    data_domains: tuple[str, ...] = (ALL,)
    created_at: str = ""
    expires_at: str | None = None
    revoked_at: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    # Parsed once here rather than on every request.
    _expires: datetime | None = field(default=None, init=False, repr=False, compare=False)
    _actions: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("roles", "use_cases", "models", "data_domains"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [r for r in self.roles if r not in ROLE_ACTIONS]
        if unknown:
            raise ValueError(f"unknown role(s) {unknown} for key {self.key_id}; known roles: {sorted(ROLE_ACTIONS)}")
        expires = _parse_iso(self.expires_at, "expires_at") if self.expires_at else None
        object.__setattr__(self, "_expires", expires)
        object.__setattr__(self, "_actions", frozenset().union(*(ROLE_ACTIONS[r] for r in self.roles)))

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def status(self, now: datetime | None = None) -> str:
        """'revoked', 'expired' or 'active' (revoked wins: it is the deliberate act)."""
        if self.revoked_at is not None:
            return "revoked"
        if self._expires is not None and _as_utc(now or _utc_now()) >= self._expires:
            return "expired"
        return "active"

    def is_active(self, now: datetime) -> bool:
        return self.status(now) == "active"

    def can(self, action: str) -> bool:
        return action in self._actions

    def allows_use_case(self, use_case: str) -> bool:
        return self.is_admin or ALL in self.use_cases or use_case in self.use_cases

    def allows_model(self, model: str) -> bool:
        return self.is_admin or ALL in self.models or model in self.models

    def allowed_domains(self) -> tuple[str, ...] | None:
        """The data domains retrieval may read for this key; None = all. Domains are a data-governance grant,
        not a role privilege, so an admin key sees only the domains it was given (all, by default)."""
        return None if ALL in self.data_domains else self.data_domains

    def to_public_dict(self) -> dict[str, Any]:
        """Everything about the key except its hash; safe to print or return from an admin endpoint."""
        data = self._to_record()
        del data["key_hash"]
        return data

    def _to_record(self) -> dict[str, Any]:
        data = asdict(self)
        for private in ("_expires", "_actions"):
            data.pop(private)
        for name in ("roles", "use_cases", "models", "data_domains"):
            data[name] = list(data[name])
        return data

    @classmethod
    def _from_record(cls, record: dict[str, Any]) -> ApiKey:
        return cls(**record)


def _validate_names(values: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str):  # a lone string would otherwise be split into characters
        values = (values,)
    names = tuple(values)
    bad = [v for v in names if not isinstance(v, str) or not v.strip() or v != v.strip()]
    if bad:
        raise ValueError(f"{what} must be non-empty names without surrounding spaces, got {bad!r}")
    return tuple(dict.fromkeys(names))  # drop duplicates, keep order


def _validate_limit(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive whole number or unset, not {value!r}")
    return value


class KeyStore:
    """The API keys in one JSON file, indexed by hash for `authenticate`.

    The gateway only reads (and calls `reload_if_changed`); `create`/`revoke` re-read the file under a lock
    before writing, so two CLI invocations never lose each other's keys.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._keys: dict[str, ApiKey] = {}
        self._by_hash: dict[str, ApiKey] = {}
        self._signature: tuple[int, int, int] | None = None
        self._load()

    # ---- reading -------------------------------------------------------------------------------------------

    def _stat_signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        # The inode changes on every os.replace, so a rewrite is seen even within one mtime tick.
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> dict[str, ApiKey]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise KeyStoreError(f"cannot read key file {self.path}: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyStoreError(f"key file {self.path} is not valid JSON: {exc}") from None
        if (
            not isinstance(data, dict)
            or data.get("version") != KEYS_FILE_VERSION
            or not isinstance(data.get("keys"), list)
        ):
            raise KeyStoreError(
                f"key file {self.path} is not a version {KEYS_FILE_VERSION} key file "
                '(expected {"version": 1, "keys": [...]})'
            )
        keys: dict[str, ApiKey] = {}
        for index, record in enumerate(data["keys"]):
            try:
                key = ApiKey._from_record(record)
            except (TypeError, ValueError) as exc:
                raise KeyStoreError(f"key file {self.path}: keys[{index}] is invalid: {exc}") from None
            keys[key.key_id] = key
        return keys

    def _install(self, keys: dict[str, ApiKey], signature: tuple[int, int, int] | None) -> None:
        self._keys = keys
        self._by_hash = {k.key_hash: k for k in keys.values()}
        self._signature = signature

    def _load(self) -> None:
        signature = self._stat_signature()
        self._install(self._read(), signature)

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed since the last read; True if it did. One stat() when unchanged.

        A file that became unreadable or invalid keeps the previous keys (and logs why); a deleted file means
        no keys, so nobody gets in (fail closed)."""
        signature = self._stat_signature()
        if signature == self._signature:
            return False
        try:
            keys = self._read()
        except KeyStoreError as exc:
            log.error("%s; keeping the %d keys loaded before", exc, len(self._keys))
            self._signature = signature  # do not re-parse the same broken file every second
            return False
        if signature is None:
            log.warning("key file %s is gone; no API key is accepted until it is recreated", self.path)
        self._install(keys, signature)
        return True

    def list(self) -> list[ApiKey]:
        # Stable sort: keys created in the same second stay in file (= creation) order.
        return sorted(self._keys.values(), key=lambda k: k.created_at)

    def get(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    # ---- writing -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked_update(self) -> Iterator[dict[str, ApiKey]]:
        """Re-read the file under an exclusive lock, let the caller change the keys, write them back."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            keys = self._read()
            yield keys
            write_json_atomic(
                self.path, {"version": KEYS_FILE_VERSION, "keys": [k._to_record() for k in keys.values()]}
            )
            self._install(keys, self._stat_signature())

    def create(
        self,
        team: str,
        *,
        name: str | None = None,
        roles: Iterable[str] = ("user",),
        use_cases: Iterable[str] = (),
        models: Iterable[str] = (),
        data_domains: Iterable[str] = (ALL,),
        expires_at: datetime | str | None = None,
        expires_in_days: float | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        now: datetime | None = None,
    ) -> tuple[str, ApiKey]:
        """Create a key and return `(plaintext, ApiKey)`; the plaintext is never stored or shown again.

        `use_cases` defaults to none: a key must be granted the use cases it may chat with ("*" = all).
        `models` and `data_domains` default to all ("*"); an empty data_domains grants no governed data."""
        if not isinstance(team, str) or not team.strip():
            raise ValueError("team must be a non-empty name")
        roles = _validate_names(roles, "roles")
        if not roles:
            raise ValueError(f"a key needs at least one role; known roles: {sorted(ROLE_ACTIONS)}")
        unknown = [r for r in roles if r not in ROLE_ACTIONS]
        if unknown:
            raise ValueError(f"unknown role(s) {unknown}; known roles: {sorted(ROLE_ACTIONS)}")
        if name is not None and not name.strip():
            raise ValueError("name must not be blank (leave it unset instead)")
        created = _as_utc(now or _utc_now())
        if expires_at is not None and expires_in_days is not None:
            raise ValueError("give expires_at or expires_in_days, not both")
        expires: datetime | None = None
        if expires_in_days is not None:
            if expires_in_days <= 0:
                raise ValueError(f"expires_in_days must be positive, not {expires_in_days!r}")
            expires = created + timedelta(days=expires_in_days)
        elif expires_at is not None:
            expires = _parse_iso(expires_at, "expires_at") if isinstance(expires_at, str) else _as_utc(expires_at)
            if expires <= created:
                raise ValueError(f"expires_at {_iso(expires)} is not in the future")
        fields = {
            "team": team.strip(),
            "name": name.strip() if name is not None else None,
            "roles": roles,
            "use_cases": _validate_names(use_cases, "use_cases"),
            "models": _validate_names(models, "models"),
            "data_domains": _validate_names(data_domains, "data_domains"),
            "created_at": _iso(created),
            "expires_at": _iso(expires) if expires is not None else None,
            "rpm": _validate_limit(rpm, "rpm"),
            "tpm": _validate_limit(tpm, "tpm"),
        }
        with self._locked_update() as keys:
            key_id = secrets.token_hex(KEY_ID_HEX_CHARS // 2)
            while key_id in keys:  # 40 random bits: a clash is unlikely but must not overwrite a key
                key_id = secrets.token_hex(KEY_ID_HEX_CHARS // 2)
            plaintext = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
            key = ApiKey(key_id=key_id, key_hash=hash_key(plaintext), **fields)
            keys[key_id] = key
        return plaintext, key

    def revoke(self, key_id: str, *, now: datetime | None = None) -> ApiKey:
        """Mark a key revoked (kept in the file for audit). Revoking twice keeps the first revocation time."""
        with self._locked_update() as keys:
            key = keys.get(key_id)
            if key is None:
                raise KeyError(f"no API key with id {key_id!r} in {self.path}")
            if key.revoked_at is None:
                key = replace(key, revoked_at=_iso(now or _utc_now()))
                keys[key_id] = key
        return key

    # ---- per request ---------------------------------------------------------------------------------------

    def authenticate(self, presented: str | None, now: datetime | None = None) -> ApiKey:
        """The active key for a presented key (bare, or a whole 'Bearer <key>' header value), else AuthError."""
        if presented is not None:
            scheme, _, rest = presented.strip().partition(" ")
            presented = rest.strip() if scheme.lower() == "bearer" else presented.strip()
        if not presented:
            raise AuthError(
                "no API key: send 'Authorization: Bearer agx_...' (create one with `agenix keys create`)",
                "missing_api_key",
            )
        key = self._by_hash.get(hash_key(presented))
        if key is None:
            # Name the key id only when it is well formed: never echo what might be someone's secret.
            match = _KEY_RE.fullmatch(presented)
            what = (
                f"API key {match.group(1)} is not known to this gateway"
                if match
                else "API key is not a valid Agenix key (agx_...)"
            )
            raise AuthError(what, "invalid_api_key")
        if key.revoked_at is not None:
            raise AuthError(f"API key {key.key_id} was revoked at {key.revoked_at}", "revoked_api_key")
        if key._expires is not None and _as_utc(now or _utc_now()) >= key._expires:
            raise AuthError(f"API key {key.key_id} expired at {key.expires_at}", "expired_api_key")
        return key

    def authorize(
        self,
        key: ApiKey,
        action: str,
        *,
        use_case: str | None = None,
        model: str | None = None,
        now: datetime | None = None,
    ) -> None:
        """Raise AccessDenied unless `key` may do `action` (on `use_case` / `model`, when given).

        Also re-checks that the key is still active (AuthError otherwise), for callers holding a key object
        across a revocation."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {sorted(ACTIONS)}")
        status = key.status(now)
        if status != "active":
            when = key.revoked_at if status == "revoked" else key.expires_at
            raise AuthError(f"API key {key.key_id} was {status} at {when}", f"{status}_api_key")
        if not key.can(action):
            raise AccessDenied(
                f"API key {key.key_id} (roles {', '.join(key.roles)}) may not use {action}; "
                f"that needs one of the roles {', '.join(sorted(r for r, a in ROLE_ACTIONS.items() if action in a))}"
            )
        if use_case is not None and not key.allows_use_case(use_case):
            granted = ", ".join(key.use_cases) or "none"
            raise AccessDenied(f"API key {key.key_id} is not granted use case {use_case!r} (granted: {granted})")
        if model is not None and not key.allows_model(model):
            granted = ", ".join(key.models) or "none"
            raise AccessDenied(f"API key {key.key_id} is not granted model {model!r} (granted: {granted})")


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    """Write JSON to a temp file in the same folder and os.replace it over `path`: readers see the old or the
    new file, never half of one. The temp file is created with `mode` (0600: key hashes and spend are private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
