"""`agenix keys create|list|revoke`: manage the gateway's API keys in $AGENIX_HOME/gateway/keys.json.

A running gateway picks up changes within about a second; no restart needed.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from .auth import ROLE_ACTIONS, ApiKey, KeyStore, KeyStoreError, keys_file

keys_app = typer.Typer(
    no_args_is_help=True, help="Gateway API keys. Only a hash of each key is stored; the key is shown once."
)

# The same option as agenix_assets.cli.HomeOption (not imported: that module adds this app to itself).
HomeOption = Annotated[
    Path | None, typer.Option("--home", help="Platform folder (default: $AGENIX_HOME or .agenix)", show_default=False)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text")]


def _store(home: Path | None) -> KeyStore:
    root = home if home is not None else Path(os.environ.get("AGENIX_HOME", ".agenix"))
    try:
        return KeyStore(keys_file(root.resolve()))
    except KeyStoreError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _public(key: ApiKey, now: datetime) -> dict[str, Any]:
    return {**key.to_public_dict(), "status": key.status(now)}


def _grants(values: tuple[str, ...]) -> str:
    return ",".join(values) if values else "-"


@keys_app.command()
def create(
    team: Annotated[str, typer.Option("--team", help="Team the key belongs to (budgets and limits are per team)")],
    name: Annotated[str | None, typer.Option("--name", help="What the key is for, e.g. 'support bot prod'")] = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", help=f"Repeatable; one of {', '.join(ROLE_ACTIONS)} (default user)")
    ] = None,
    use_case: Annotated[
        list[str] | None,
        typer.Option("--use-case", help="Repeatable; use case id the key may chat with, '*' = all (default none)"),
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Repeatable; model the key may call directly, '*' for all (default none: use cases only)")
    ] = None,
    domain: Annotated[
        list[str] | None, typer.Option("--domain", help="Repeatable; data domain retrieval may read (default all)")
    ] = None,
    expires_in_days: Annotated[
        float | None, typer.Option("--expires-in-days", help="Key stops working after this")
    ] = None,
    rpm: Annotated[
        int | None,
        typer.Option("--rpm", help="Requests per minute for this key (default: only the team limit applies)"),
    ] = None,
    tpm: Annotated[
        int | None, typer.Option("--tpm", help="Tokens per minute for this key (default: only the team limit applies)")
    ] = None,
    as_json: JsonFlag = False,
    home: HomeOption = None,
) -> None:
    """Create a key and print it. This is the only time the key is shown."""
    store = _store(home)
    try:
        plaintext, key = store.create(
            team,
            name=name,
            roles=role or ("user",),
            use_cases=use_case or (),
            models=model or (),
            data_domains=domain or ("*",),
            expires_in_days=expires_in_days,
            rpm=rpm,
            tpm=tpm,
        )
    except ValueError as exc:
        _fail(str(exc))
    now = datetime.now(UTC)
    if as_json:
        typer.echo(json.dumps({"key": plaintext, **_public(key, now)}, indent=2))
        return
    lines = [
        f"key:        {plaintext}",
        "",
        "Store it now: this is the only time the key is shown (only its hash is kept).",
        "",
        f"key_id:     {key.key_id}",
        f"team:       {key.team}",
        f"name:       {key.name or '-'}",
        f"roles:      {_grants(key.roles)}",
        f"use cases:  {_grants(key.use_cases)}",
        f"models:     {_grants(key.models)}",
        f"domains:    {_grants(key.data_domains)}",
        f"expires:    {key.expires_at or 'never'}",
        f"limits:     rpm {key.rpm or 'team only'}, tpm {key.tpm or 'team only'}",
        f"key file:   {store.path}",
    ]
    if not key.use_cases and not key.is_admin:
        lines.append("note: no use case granted, so this key cannot chat; add --use-case ID (or --use-case '*').")
    typer.echo("\n".join(lines))


@keys_app.command("list")
def list_keys(as_json: JsonFlag = False, home: HomeOption = None) -> None:
    """List keys (never the keys or their hashes) with their grants and status."""
    store = _store(home)
    now = datetime.now(UTC)
    keys = store.list()
    if as_json:
        typer.echo(json.dumps([_public(k, now) for k in keys], indent=2))
        return
    if not keys:
        typer.echo(f"no API keys in {store.path}; create one with `agenix keys create --team T --use-case U`")
        return
    header = ("KEY_ID", "TEAM", "NAME", "ROLES", "USE CASES", "MODELS", "DOMAINS", "CREATED", "EXPIRES", "STATUS")
    rows = [
        (
            k.key_id,
            k.team,
            k.name or "-",
            _grants(k.roles),
            _grants(k.use_cases),
            _grants(k.models),
            _grants(k.data_domains),
            k.created_at,
            k.expires_at or "never",
            k.status(now),
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@keys_app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key_id shown by `agenix keys list`")],
    home: HomeOption = None,
) -> None:
    """Revoke a key; the gateway refuses it from its next reload (about a second)."""
    store = _store(home)
    already = store.get(key_id)
    try:
        key = store.revoke(key_id)
    except KeyError as exc:
        _fail(exc.args[0])
    if already is not None and already.revoked_at is not None:
        typer.echo(f"key {key.key_id} (team {key.team}) was already revoked at {key.revoked_at}")
    else:
        typer.echo(f"revoked key {key.key_id} (team {key.team}) at {key.revoked_at}")
