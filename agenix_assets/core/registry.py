"""Registries as data: models, prompt versions and retrieval configurations, each entry content-hashed. No Dagster.

Three version-controlled YAML files make up what a use case answers with:

- ``config/gateway/models.yaml``: the model registry (one entry per model, shared by every use case);
- ``config/prompts/<use-case>.yaml``: the prompt registry (one entry per prompt version);
- ``config/rag/<use_case>.yaml``: the retrieval configuration (one entry: its ``version``), together with the
  use case's retrieval settings in ``config/gateway/gateway.yaml`` (top_k, min_relevance, context_chars).

Every entry carries governance metadata (``owner``, ``purpose``, ``risk_rating``), required here: a missing one
is a ``RegistryError`` naming file, line and entry, every such entry at once. An entry's ``content`` is the
canonical JSON of what changes answers (never its description or governance fields, never a secret, a model's
``base_url`` as written, before ``${ENV}`` expansion, so the hash does not depend on the machine); its
``content_hash`` (sha256, 16 hex) is its data version. A registry's hash covers its entries' names, content
hashes and governance metadata, so an owner change shows as a new registry version while the candidate, which
uses content hashes only, stays the same.

A release candidate (``resolve_candidate``) is the concrete tuple (model, prompt version, index version,
retrieval configuration) a use case's candidate spec (``config/releases/<use-case>.yaml``) resolves to, each
part with its content hash; its id is ``<use-case>-<hash8>``. ``releases.candidates`` in the warehouse keeps
every distinct candidate, published only once its ``candidate_resolves`` check passed (write-audit-publish):
``resolved_candidate`` / ``latest_candidate`` read it back for the evaluation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
from .config import ConfigError, RagSettings, Strict, _line_index, load_yaml_model
from .gates import GateRefused, GateResult, require_passed

GOVERNANCE_FIELDS = ("owner", "purpose", "risk_rating")
MODELS = "models"
CANDIDATE_RESOLVES = "candidate_resolves"
ENTRIES_TABLE = "registry.entries"
CANDIDATES_TABLE = "releases.candidates"
MISSING = "-"  # the hash of a part that does not resolve (a prompt version that does not exist, ...)


class RegistryError(ConfigError):
    """A registry file is invalid or an entry lacks governance metadata; names file, line and entry."""


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(value: Any) -> str:
    """sha256 of the canonical JSON of ``value``, 16 hex digits."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class RegistryEntry:
    """One registry entry: a model, a prompt version or a retrieval configuration version."""

    name: str  # model name, prompt version key ("v1"), retrieval config version ("v1")
    owner: str
    purpose: str
    risk_rating: str
    content: str  # canonical JSON of what changes answers
    content_hash: str
    source: str  # file:line of the entry
    attributes: dict[str, Any] = field(default_factory=dict)  # what resolution needs (enabled, prompt_style, ...)

    def governance_record(self) -> dict[str, str]:
        return {"name": self.name, "content_hash": self.content_hash, "owner": self.owner, "purpose": self.purpose,
                "risk_rating": self.risk_rating}


@dataclass(frozen=True)
class Registry:
    kind: Literal["models", "prompts", "retrieval"]
    name: str  # "models", "support-assistant/prompts", "support-assistant/retrieval"
    source: str  # the file
    entries: tuple[RegistryEntry, ...]

    @property
    def hash(self) -> str:
        return content_hash([e.governance_record() for e in sorted(self.entries, key=lambda e: e.name)])

    def get(self, name: str) -> RegistryEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def hashes(self) -> dict[str, str]:
        return {e.name: e.content_hash for e in self.entries}


@dataclass(frozen=True)
class Registries:
    """The three registries a use case's candidate is made of."""

    use_case: str
    models: Registry
    prompts: Registry
    retrieval: Registry


# ------------------------------------------------------------------------------------------------ loading


def _governance_problems(path: Path, lines: dict, loc: tuple, label: str, record: Any) -> str | None:
    missing = [f for f in GOVERNANCE_FIELDS if not getattr(record, f, None)]
    if not missing:
        return None
    line = lines.get(loc, lines.get((), 1))
    return (f"{path}:{line}: {label}: missing {', '.join(missing)} (every registry entry needs owner "
            "(team:<name> or an e-mail), purpose and risk_rating (low|medium|high))")


def _raise_if(problems: list[str | None]) -> None:
    found = [p for p in problems if p]
    if found:
        raise RegistryError("invalid registry:\n  " + "\n  ".join(found))


def _lines(path: Path) -> dict:
    return _line_index(path.read_text(encoding="utf-8"))


def _entry(name: str, record: Any, content: dict, source: str, **attributes: Any) -> RegistryEntry:
    return RegistryEntry(
        name=name, owner=record.owner, purpose=record.purpose, risk_rating=record.risk_rating,
        content=canonical_json(content), content_hash=content_hash(content), source=source, attributes=attributes,
    )


def load_model_registry(config_dir: Path) -> Registry:
    from serving.config import ModelRegistry

    path = Path(config_dir) / "gateway" / "models.yaml"
    registry = load_yaml_model(path, ModelRegistry)
    lines = _lines(path)
    _raise_if([_governance_problems(path, lines, ("models", i), f"model {m.name!r}", m)
               for i, m in enumerate(registry.models)])
    entries = []
    for i, m in enumerate(registry.models):
        # api_key_env names a variable, never holds a key; base_url stays unexpanded.
        content = {**m.model_dump(mode="json", exclude={"description", *GOVERNANCE_FIELDS}),
                   "currency": registry.currency}
        entries.append(_entry(m.name, m, content, f"{path}:{lines.get(('models', i), 1)}",
                              enabled=m.enabled, kind=m.kind, prompt_style=m.prompt_style))
    return Registry("models", MODELS, str(path), tuple(entries))


def _use_case_files(config_dir: Path, use_case: str) -> tuple[Path, Path, dict[str, Any]]:
    """The prompt book and RAG settings of a use case as the gateway finds them (gateway.yaml's use case), and
    the use case's retrieval settings there; without a gateway entry, the conventional file names."""
    from serving.config import GatewaySettings
    from serving.prompts import prompt_book_path

    config_dir = Path(config_dir)
    gateway = config_dir / "gateway" / "gateway.yaml"
    settings = load_yaml_model(gateway, GatewaySettings).use_cases.get(use_case) if gateway.is_file() else None
    if settings is not None:
        serving = {"top_k": settings.top_k, "min_relevance": settings.min_relevance,
                   "context_chars": settings.context_chars,
                   # Which passages answer and which tier answers first change answers as much as top_k does.
                   "authoritative_sources": settings.authoritative_sources,
                   "authoritative_pool": settings.authoritative_pool, "quality_tier": settings.quality_tier,
                   "simple_quality_tier": settings.simple_quality_tier,
                   "no_answer_is_final": settings.no_answer_is_final,
                   "out_of_scope": [r.model_dump(mode="json") for r in settings.out_of_scope]}
        if settings.glossary:
            from serving.glossary import use_case_glossary

            # A glossary edit changes what is retrieved and quoted: a new retrieval config version.
            serving["glossary"] = {"file": settings.glossary,
                                   "hash": use_case_glossary(config_dir, settings).content_hash}
        return config_dir / settings.prompts, config_dir / settings.rag_config, serving
    rag = next((p for p in sorted((config_dir / "rag").glob("*.yaml"))
                if load_yaml_model(p, RagSettings).use_case == use_case), None)
    if rag is None:
        raise RegistryError(f"{config_dir / 'rag'}: no RAG settings for use case {use_case!r}")
    return prompt_book_path(config_dir, use_case), rag, {}


def load_prompt_registry(config_dir: Path, use_case: str) -> Registry:
    from serving.prompts import load_prompt_book

    path, _, _ = _use_case_files(config_dir, use_case)
    book = load_prompt_book(path)
    if book.use_case != use_case:
        raise RegistryError(f"{path}:{_lines(path).get(('use_case',), 1)}: use_case: expected {use_case!r}, "
                            f"got {book.use_case!r}")
    lines = _lines(path)
    _raise_if([_governance_problems(path, lines, ("versions", k), f"prompt version {k!r}", v)
               for k, v in book.versions.items()])
    entries = [
        _entry(k, v, v.model_dump(mode="json", exclude={"name", "description", *GOVERNANCE_FIELDS}),
               f"{path}:{lines.get(('versions', k), 1)}",
               styles=[s for s in ("completion", "chat") if getattr(v, s) is not None])
        for k, v in ((k, book.versions[k]) for k in book._ordered())
    ]
    return Registry("prompts", f"{use_case}/prompts", str(path), tuple(entries))


def retrieval_content(rag: RagSettings, serving: dict[str, Any]) -> dict[str, Any]:
    """What of a use case's RAG settings changes answers: what is indexed and how (sources, PII masking,
    chunking), how it is retrieved, and the gateway's top_k / min_relevance / context_chars. Index retention,
    layering and the smoke test change no answer."""
    dumped = rag.model_dump(mode="json")
    return {
        "indexed_sources": dumped["indexed_sources"],
        "pii": dumped["pii"],
        "chunking": dumped["chunking"],
        "max_document_chars": dumped["max_document_chars"],
        "retrieval": dumped["retrieval"],
        "serving": serving,
    }


def load_retrieval_registry(config_dir: Path, use_case: str) -> Registry:
    _, path, serving = _use_case_files(config_dir, use_case)
    rag = load_yaml_model(path, RagSettings)
    lines = _lines(path)
    name = f"v{rag.version}"
    _raise_if([_governance_problems(path, lines, ("version",), f"retrieval config {name!r}", rag)])
    entry = _entry(name, rag, retrieval_content(rag, serving), f"{path}:{lines.get(('version',), 1)}",
                   retrieval=dict(rag.retrieval))
    return Registry("retrieval", f"{use_case}/retrieval", str(path), (entry,))


def load_registries(config_dir: Path, use_case: str) -> Registries:
    """All three registries of a use case; every problem of every file is reported before raising."""
    loaded, problems = {}, []
    for kind, load in (("models", lambda: load_model_registry(config_dir)),
                       ("prompts", lambda: load_prompt_registry(config_dir, use_case)),
                       ("retrieval", lambda: load_retrieval_registry(config_dir, use_case))):
        try:
            loaded[kind] = load()
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise RegistryError("\n".join(problems))
    return Registries(use_case, loaded["models"], loaded["prompts"], loaded["retrieval"])


# ------------------------------------------------------------------------------------------------ candidates


class CandidateSpec(Strict):
    # "auto": routing picks per request among the enabled generators; or a registry model's name.
    model: str = "auto"
    prompt_version: str = "latest"  # "latest": the newest version key (v2 < v10)
    index_version: int | Literal["live"] = "live"  # "live": the newest servable index version


class ReleaseSpec(Strict):
    """config/releases/<use-case>.yaml: what the use case's next release candidate is made of."""

    use_case: str
    candidate: CandidateSpec = CandidateSpec()


def release_spec_path(config_dir: Path, use_case: str) -> Path:
    return Path(config_dir) / "releases" / f"{use_case}.yaml"


def load_release_spec(config_dir: Path, use_case: str) -> ReleaseSpec:
    """The use case's candidate spec; without a file, the current config as is (auto, latest, live)."""
    path = release_spec_path(config_dir, use_case)
    if not path.is_file():
        return ReleaseSpec(use_case=use_case)
    spec = load_yaml_model(path, ReleaseSpec)
    if spec.use_case != use_case:
        raise RegistryError(f"{path}:{_lines(path).get(('use_case',), 1)}: use_case: expected {use_case!r}, "
                            f"got {spec.use_case!r}")
    return spec


@dataclass(frozen=True)
class ResolvedCandidate:
    """A release candidate: concrete parts, each with its content hash. ``release()`` is what the gateway's
    pipeline runs (``serving.config.Release``); ``retrieval`` the retrieval-config override it runs with."""

    use_case: str
    candidate_id: str
    candidate_hash: str
    model: str
    model_hash: str
    prompt_version: str
    prompt_hash: str
    index_version: int  # -1: none servable
    index_hash: str
    retrieval_version: str
    retrieval_hash: str
    retrieval: dict[str, Any]
    spec: dict[str, Any]

    PARTS = ("model", "prompt_version", "index_version", "retrieval_version")

    def parts(self) -> dict[str, tuple[Any, str]]:
        """Each part and its hash: {"model": ("auto", "ab12..."), ...}."""
        return {"model": (self.model, self.model_hash), "prompt_version": (self.prompt_version, self.prompt_hash),
                "index_version": (self.index_version, self.index_hash),
                "retrieval_version": (self.retrieval_version, self.retrieval_hash)}

    def release(self, name: str | None = None):
        from serving.config import Release

        return Release(name=name or self.candidate_id, model=self.model, prompt_version=self.prompt_version,
                       index_version=self.index_version)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Resolution:
    candidate: ResolvedCandidate
    problems: list[str]  # why the candidate cannot be evaluated; empty when it resolves
    servable_versions: list[int]

    @property
    def resolves(self) -> bool:
        return not self.problems


def servable_index_versions(config_dir: Path, index_root: Path, use_case: str) -> list[int]:
    """Index versions the gateway would serve (its own resolution: artifacts complete, every gate passed)."""
    from serving.rag import UseCaseIndex

    _, rag_path, _ = _use_case_files(config_dir, use_case)
    rag = load_yaml_model(rag_path, RagSettings)
    return UseCaseIndex(use_case, None, rag, Path(index_root), encoder=None).live_versions()


def _index_hash(use_case: str, version: int) -> str:
    from .index import collection_name

    # An index version is immutable: its collection name is its identity.
    return content_hash({"collection": collection_name("agenix", use_case, version)}) if version >= 0 else MISSING


def _resolve_model(models: Registry, name: str) -> tuple[str, list[RegistryEntry], list[str]]:
    generators = [e for e in models.entries
                  if e.attributes["enabled"] and e.attributes["kind"] in ("openai", "extractive")]
    if name == "auto":
        if not generators:
            return MISSING, [], [f"model 'auto': no enabled generator model in {models.source}"]
        # Routing may pick any enabled generator: the part changes when any of them does.
        return content_hash(sorted((e.name, e.content_hash) for e in generators)), generators, []
    entry = models.get(name)
    if entry is None:
        return MISSING, [], [f"model {name!r} is not in the model registry {models.source} "
                             f"(known: {', '.join(models.names())})"]
    if not entry.attributes["enabled"]:
        return entry.content_hash, [], [f"model {name!r} is disabled in the model registry ({entry.source})"]
    if entry.attributes["kind"] not in ("openai", "extractive"):
        return entry.content_hash, [], [f"model {name!r} is a {entry.attributes['kind']} model, not a generator"]
    return entry.content_hash, [entry], []


def resolve_candidate(registries: Registries, spec: ReleaseSpec, servable: Sequence[int]) -> Resolution:
    """The concrete candidate a spec names, and every reason it cannot be evaluated (empty when it resolves)."""
    uc, want = registries.use_case, spec.candidate
    problems: list[str] = []

    model_hash, generators, model_problems = _resolve_model(registries.models, want.model)
    problems += model_problems

    prompts = registries.prompts
    ordered = prompts.names()
    prompt_version = ordered[-1] if want.prompt_version == "latest" and ordered else want.prompt_version
    prompt = prompts.get(prompt_version)
    if prompt is None:
        problems.append(f"prompt version {prompt_version!r} does not exist in {prompts.source} "
                        f"(versions: {', '.join(ordered)})")
    else:
        for g in generators:
            style = g.attributes["prompt_style"]
            if style != "none" and style not in prompt.attributes["styles"]:
                problems.append(f"model {g.name!r} needs a {style!r} prompt, prompt version {prompt_version!r} has "
                                f"only {', '.join(prompt.attributes['styles'])} ({prompt.source})")

    servable = sorted(servable)
    if want.index_version == "live":
        index_version = servable[-1] if servable else -1
        if not servable:
            problems.append(f"no servable index version of {uc} (materialize its vector_index until its gates pass)")
    else:
        index_version = int(want.index_version)
        if index_version not in servable:
            problems.append(f"index version {index_version} of {uc} is not servable (servable: {servable or 'none'})")

    [retrieval] = registries.retrieval.entries
    parts = {
        "use_case": uc,
        "model": [want.model, model_hash],
        "prompt_version": [prompt_version, prompt.content_hash if prompt else MISSING],
        "index_version": [index_version, _index_hash(uc, index_version)],
        "retrieval_version": [retrieval.name, retrieval.content_hash],
    }
    digest = content_hash(parts)
    candidate = ResolvedCandidate(
        use_case=uc, candidate_id=f"{uc}-{digest[:8]}", candidate_hash=digest,
        model=want.model, model_hash=model_hash,
        prompt_version=prompt_version, prompt_hash=parts["prompt_version"][1],
        index_version=index_version, index_hash=parts["index_version"][1],
        retrieval_version=retrieval.name, retrieval_hash=retrieval.content_hash,
        retrieval=dict(retrieval.attributes["retrieval"]), spec=want.model_dump(mode="json"),
    )
    return Resolution(candidate, problems, servable)


def current_candidate(config_dir: Path, index_root: Path, use_case: str) -> Resolution:
    """Read the files and the index verdicts (no warehouse) and resolve the use case's candidate spec: what the
    release_candidate asset would materialize now. The sensor compares its hash with the last one."""
    registries = load_registries(config_dir, use_case)
    spec = load_release_spec(config_dir, use_case)
    return resolve_candidate(registries, spec, servable_index_versions(config_dir, index_root, use_case))


def production_parts(config_dir: Path, index_root: Path, use_case: str, registries: Registries,
                     environment: str | None = None) -> tuple[str, ResolvedCandidate] | None:
    """The production release of the use case (deployments/<environment>.yaml) resolved like a candidate, and
    its release name; None when the environment does not deploy the use case."""
    from serving.config import DeploymentManifest

    from serving.config import GatewayConfig

    # The manifest in force: what the deployer wrote under AGENIX_HOME (index_root's parent), else config's.
    path = GatewayConfig.load(config_dir, environment).live_manifest_path(Path(index_root).parent)
    manifest = load_yaml_model(path, DeploymentManifest)
    deployed = manifest.use_cases.get(use_case)
    if deployed is None:
        return None
    r = deployed.release
    spec = ReleaseSpec(use_case=use_case, candidate=CandidateSpec(model=r.model, prompt_version=r.prompt_version,
                                                                  index_version=r.index_version))
    servable = servable_index_versions(config_dir, index_root, use_case)
    return r.name, resolve_candidate(registries, spec, servable).candidate


def pin_problems(config_dir: Path, index_root: Path, use_case: str, release: Any) -> list[str]:
    """Which pinned parts of a deployed release (``serving.config.Release`` with ``pins``) config/ no longer holds:
    e.g. its prompt version edited in place after approval. Empty when every pin matches."""
    spec = ReleaseSpec(use_case=use_case, candidate=CandidateSpec(
        model=release.model, prompt_version=release.prompt_version, index_version=release.index_version))
    now = resolve_candidate(load_registries(config_dir, use_case), spec,
                            servable_index_versions(config_dir, index_root, use_case)).candidate
    return [f"{part} {value} was {release.pins[part]} when approved, is {h} now"
            for part, (value, h) in now.parts().items() if part in release.pins and release.pins[part] != h]


def differing_parts(candidate: ResolvedCandidate, production: ResolvedCandidate | None) -> list[str]:
    """The parts (by name) whose value or content hash differ from production's; every part without one."""
    if production is None:
        return list(ResolvedCandidate.PARTS)
    mine, theirs = candidate.parts(), production.parts()
    return [p for p in ResolvedCandidate.PARTS if mine[p] != theirs[p]]


def stale_parts(candidate: ResolvedCandidate, config_dir: Path, index_root: Path) -> list[str]:
    """The parts of a recorded candidate whose files no longer hold what it was resolved from (e.g. its prompt
    version was edited in place since). An evaluation that runs the candidate from today's config/ must refuse
    when this is not empty: it would measure something else under the candidate's id."""
    registries = load_registries(config_dir, candidate.use_case)
    spec = ReleaseSpec(use_case=candidate.use_case, candidate=CandidateSpec(
        model=candidate.model, prompt_version=candidate.prompt_version,
        index_version=candidate.index_version if candidate.index_version >= 0 else "live"))
    now = resolve_candidate(registries, spec, servable_index_versions(config_dir, index_root, candidate.use_case))
    return differing_parts(candidate, now.candidate)


# ------------------------------------------------------------------------------------------------ warehouse


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS registry")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {ENTRIES_TABLE} (
            registry VARCHAR, kind VARCHAR, name VARCHAR, content_hash VARCHAR, owner VARCHAR, purpose VARCHAR,
            risk_rating VARCHAR, content VARCHAR, source VARCHAR, recorded_at TIMESTAMP, run_id VARCHAR)"""
    )
    con.execute("CREATE SCHEMA IF NOT EXISTS releases")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {CANDIDATES_TABLE} (
            candidate_id VARCHAR, use_case VARCHAR, candidate_hash VARCHAR,
            model VARCHAR, model_hash VARCHAR, prompt_version VARCHAR, prompt_hash VARCHAR,
            index_version INTEGER, index_hash VARCHAR, retrieval_version VARCHAR, retrieval_hash VARCHAR,
            retrieval VARCHAR, spec VARCHAR, problems VARCHAR,
            created_at TIMESTAMP, run_id VARCHAR,
            published BOOLEAN, published_at TIMESTAMP, published_run_id VARCHAR)"""
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def record_entries(con: duckdb.DuckDBPyConnection, registry: Registry, run_id: str) -> list[str]:
    """Append the entry versions not recorded yet (by name, content hash and governance metadata), so any past
    release can be rebuilt from its hashes. Returns the names of the entries recorded now."""
    ensure_schema(con)
    known = {tuple(r) for r in con.execute(
        f"SELECT name, content_hash, owner, purpose, risk_rating FROM {ENTRIES_TABLE} WHERE registry = ?",
        [registry.name]).fetchall()}
    new = [e for e in registry.entries
           if (e.name, e.content_hash, e.owner, e.purpose, e.risk_rating) not in known]
    now = _now()
    if not new:
        return []
    con.executemany(
        f"INSERT INTO {ENTRIES_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(registry.name, registry.kind, e.name, e.content_hash, e.owner, e.purpose, e.risk_rating, e.content,
          e.source, now, run_id) for e in new],
    )
    return [e.name for e in new]


def entry_content(con: duckdb.DuckDBPyConnection, registry: str, name: str, content_hash_: str) -> dict[str, Any]:
    """The recorded content of one entry version (e.g. the prompt a past candidate ran with)."""
    ensure_schema(con)
    row = con.execute(f"SELECT content FROM {ENTRIES_TABLE} WHERE registry = ? AND name = ? AND content_hash = ? "
                      "LIMIT 1", [registry, name, content_hash_]).fetchone()
    if row is None:
        raise KeyError(f"{ENTRIES_TABLE}: no {registry} entry {name!r} with hash {content_hash_}")
    return json.loads(row[0])


def record_candidate(con: duckdb.DuckDBPyConnection, resolution: Resolution, run_id: str) -> bool:
    """Write the candidate (one row per distinct candidate) and publish it if it resolves. A row written
    unpublished is published by a later run in which it resolves; a published row is never unpublished.
    Returns whether the candidate is published. Run it in the transaction that records the gate verdict."""
    ensure_schema(con)
    c, now = resolution.candidate, _now()
    exists = con.execute(f"SELECT published FROM {CANDIDATES_TABLE} WHERE candidate_id = ?",
                         [c.candidate_id]).fetchone()
    if exists is None:
        con.execute(
            f"INSERT INTO {CANDIDATES_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [c.candidate_id, c.use_case, c.candidate_hash, c.model, c.model_hash, c.prompt_version, c.prompt_hash,
             c.index_version, c.index_hash, c.retrieval_version, c.retrieval_hash, canonical_json(c.retrieval),
             canonical_json(c.spec), json.dumps(resolution.problems), now, run_id, resolution.resolves,
             now if resolution.resolves else None, run_id if resolution.resolves else None],
        )
        return resolution.resolves
    if resolution.resolves and not exists[0]:
        con.execute(f"UPDATE {CANDIDATES_TABLE} SET published = true, published_at = ?, published_run_id = ?, "
                    "problems = '[]' WHERE candidate_id = ?", [now, run_id, c.candidate_id])
    return bool(exists[0]) or resolution.resolves


def resolved_candidate(con: duckdb.DuckDBPyConnection, candidate_id: str,
                       published_only: bool = True) -> ResolvedCandidate:
    """A recorded candidate by id. Unpublished candidates (their check failed) are refused unless asked for."""
    ensure_schema(con)
    row = con.execute(
        f"""SELECT use_case, candidate_id, candidate_hash, model, model_hash, prompt_version, prompt_hash,
                   index_version, index_hash, retrieval_version, retrieval_hash, retrieval, spec, published, problems
            FROM {CANDIDATES_TABLE} WHERE candidate_id = ?""", [candidate_id]).fetchone()
    if row is None:
        raise KeyError(f"{CANDIDATES_TABLE}: no candidate {candidate_id!r}")
    *values, retrieval, spec, published, problems = row
    if published_only and not published:
        raise LookupError(f"candidate {candidate_id} is not published: its {CANDIDATE_RESOLVES} check failed: "
                          + "; ".join(json.loads(problems or "[]")))
    return ResolvedCandidate(*values, retrieval=json.loads(retrieval), spec=json.loads(spec))


def latest_candidate(con: duckdb.DuckDBPyConnection, asset: str, consumer: str) -> ResolvedCandidate:
    """The candidate the latest materialization of ``asset`` (e.g. "support_assistant/release_candidate")
    resolved, if its ``candidate_resolves`` check passed; ``GateRefused`` naming the reason otherwise."""
    verdicts = require_passed(con, asset, consumer, [CANDIDATE_RESOLVES])
    candidate_id = next(v.evidence.get("candidate_id") for v in verdicts if v.check == CANDIDATE_RESOLVES)
    try:
        return resolved_candidate(con, candidate_id)
    except (KeyError, LookupError) as exc:
        raise GateRefused(consumer, [GateResult(asset, CANDIDATE_RESOLVES, False, str(exc))]) from None


__all__ = [
    "CANDIDATE_RESOLVES", "CANDIDATES_TABLE", "ENTRIES_TABLE", "MISSING", "release_spec_path", "CandidateSpec", "Registries", "Registry", "RegistryEntry", "RegistryError",
    "ReleaseSpec", "Resolution", "ResolvedCandidate", "canonical_json", "content_hash", "current_candidate",
    "differing_parts", "entry_content", "latest_candidate", "load_model_registry", "load_prompt_registry",
    "load_registries", "load_release_spec", "load_retrieval_registry", "pin_problems", "production_parts", "record_candidate",
    "record_entries", "resolve_candidate", "resolved_candidate", "servable_index_versions", "stale_parts",
]

