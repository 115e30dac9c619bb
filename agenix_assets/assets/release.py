"""Registries as assets, and the release candidate they make up (issue 10, build 1 and 2).

- ``registry/models``, ``<use case>/prompt_registry``, ``<use case>/retrieval_config`` (group ``registry``):
  the validated YAML registries; each materialization's data version is the registry's content hash, its
  metadata a table of entries (owner, risk, hash, what changed since the last materialization), and every
  entry version is appended to ``registry.entries`` so a past release can be rebuilt from its hashes.
- ``<use case>/release_candidate`` (group ``release``): the tuple (model, prompt version, index version,
  retrieval configuration) that ``config/releases/<use-case>.yaml`` resolves to; data version = the tuple's
  hash, so it changes exactly when a part does. Its blocking check ``candidate_resolves`` is recorded as a gate
  (core/gates.py) in the transaction that writes ``releases.candidates``, where the row is published only when
  the check passed: the evaluation reads it with ``core.registry.latest_candidate`` in any later run.

The logic lives in core/registry.py; these assets wire resources to it and report metadata.
"""


import json
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from ..core import gates
from ..core import registry as core
from ..core.config import ConfigError, default_config_dir
from ..core.tables import markdown_table
from ..resources.platform import AgenixResource
from ..resources.warehouse import DUCKDB_POOL, WarehouseResource
from .rag import rag_key

REGISTRY_GROUP = "registry"
RELEASE_GROUP = "release"
OWNER = "team:llm"
MODEL_REGISTRY = dg.AssetKey(["registry", "models"])
CANDIDATE_RESOLVES = core.CANDIDATE_RESOLVES
ENTRY_HASHES = "entry_hashes"  # metadata key: {name: content hash} of the materialization, for the next diff


def prompt_registry_key(use_case: str) -> dg.AssetKey:
    return rag_key(use_case, "prompt_registry")


def retrieval_config_key(use_case: str) -> dg.AssetKey:
    return rag_key(use_case, "retrieval_config")


def release_candidate_key(use_case: str) -> dg.AssetKey:
    return rag_key(use_case, "release_candidate")


def registry_keys(use_case: str) -> list[dg.AssetKey]:
    return [MODEL_REGISTRY, prompt_registry_key(use_case), retrieval_config_key(use_case)]


def config_dir_of(agenix: AgenixResource) -> Path:
    return Path(agenix.config_dir) if agenix.config_dir else default_config_dir()


def _previous_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict | None:
    """The metadata of the asset's latest materialization before this one (None if there is none)."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _registry_metadata(registry: core.Registry, previous: dict | None, recorded: list[str]) -> dict:
    before: dict[str, str] = (previous or {}).get(ENTRY_HASHES) or {}
    if isinstance(before, str):
        before = json.loads(before)
    rows, status = [], {}
    for e in registry.entries:
        if previous is None:
            status[e.name] = "first"
        elif e.name not in before:
            status[e.name] = "added"
        elif before[e.name] != e.content_hash:
            status[e.name] = f"changed (was {before[e.name]})"
        else:
            status[e.name] = ""
        rows.append({"entry": e.name, "owner": e.owner, "risk": e.risk_rating, "purpose": e.purpose,
                     "hash": e.content_hash, "changed": status[e.name], "source": e.source})
    removed = sorted(set(before) - set(registry.names()))
    rows += [{"entry": n, "owner": "", "risk": "", "purpose": "", "hash": before[n], "changed": "removed",
              "source": ""} for n in removed]
    changed = [n for n, s in status.items() if s.startswith("changed")]
    return {
        "registry_hash": registry.hash,
        "entries": len(registry.entries),
        "changed": len(changed),
        "added": sum(s == "added" for s in status.values()),
        "removed": len(removed),
        "changed_entries": ", ".join(changed + [n for n, s in status.items() if s == "added"] + removed) or "(none)",
        "versions_recorded": len(recorded),
        "high_risk_entries": sum(e.risk_rating == "high" for e in registry.entries),
        "source": registry.source,
        "registry": dg.MetadataValue.md(markdown_table(rows)),
        ENTRY_HASHES: dg.MetadataValue.json(registry.hashes()),
    }


def _registry_asset(key: dg.AssetKey, load: Callable[[Path], core.Registry], description: str,
                    tags: dict[str, str] | None = None) -> dg.AssetsDefinition:
    @dg.asset(
        key=key,
        group_name=REGISTRY_GROUP,
        owners=[OWNER],
        kinds={"yaml", "duckdb"},
        pool=DUCKDB_POOL,
        tags=tags or {},
        description=description,
    )
    def _registry(context: dg.AssetExecutionContext, agenix: AgenixResource, warehouse: WarehouseResource):
        try:
            registry = load(config_dir_of(agenix))
        except ConfigError as exc:
            raise dg.Failure(description=str(exc), metadata={"error": str(exc)}) from None
        previous = _previous_metadata(context.instance, key)
        with warehouse.connect() as con:
            recorded = core.record_entries(con, registry, context.run_id)
        metadata = _registry_metadata(registry, previous, recorded)
        context.log.info(f"{registry.name}: {metadata['entries']} entries, changed: {metadata['changed_entries']}")
        return dg.MaterializeResult(data_version=dg.DataVersion(registry.hash), metadata=metadata)

    return _registry


def build_model_registry_asset() -> dg.AssetsDefinition:
    return _registry_asset(
        MODEL_REGISTRY,
        core.load_model_registry,
        "The model registry (config/gateway/models.yaml): every backend the gateway may call, with owner, purpose, "
        f"risk rating and content hash (its version). Data version = the registry's hash. Versions in "
        f"{core.ENTRIES_TABLE}.",
    )


def build_release_assets(use_case: str) -> list:
    tags = {"agenix/use_case": use_case}
    prompts_key, retrieval_key = prompt_registry_key(use_case), retrieval_config_key(use_case)
    candidate_key = release_candidate_key(use_case)
    index_key = rag_key(use_case, "vector_index")

    prompt_registry = _registry_asset(
        prompts_key,
        lambda config_dir: core.load_prompt_registry(config_dir, use_case),
        f"Prompt versions of use case '{use_case}' (config/prompts/{use_case}.yaml), each with owner, purpose, risk "
        f"rating and content hash. Data version = the registry's hash. Versions in {core.ENTRIES_TABLE}.",
        tags,
    )
    retrieval_config = _registry_asset(
        retrieval_key,
        lambda config_dir: core.load_retrieval_registry(config_dir, use_case),
        f"The retrieval configuration of use case '{use_case}' (its config/rag file and its top_k/min_relevance/"
        "context_chars in gateway.yaml): what changes answers, hashed. Data version = its hash.",
        tags,
    )

    @dg.asset(
        key=candidate_key,
        deps=[MODEL_REGISTRY, prompts_key, retrieval_key, index_key],
        group_name=RELEASE_GROUP,
        owners=[OWNER],
        kinds={"duckdb"},
        pool=DUCKDB_POOL,
        tags=tags,
        description=f"The release candidate of use case '{use_case}': the (model, prompt version, index version, "
        f"retrieval config) tuple config/releases/{use_case}.yaml resolves to, each part with its content hash. "
        f"Data version = the tuple's hash; id = <use-case>-<hash8>. Rows in {core.CANDIDATES_TABLE}, published "
        f"only when {CANDIDATE_RESOLVES} passed.",
        check_specs=[
            dg.AssetCheckSpec(
                CANDIDATE_RESOLVES, asset=candidate_key, blocking=True,
                description="The model is in the registry and enabled, the prompt version exists and has the prompt "
                "style the model needs, the index version is servable, the registries are valid. Blocks the "
                "candidate's evaluation (in this run and, through releases.candidates and gates, in any later one).",
            )
        ],
    )
    def release_candidate(context: dg.AssetExecutionContext, agenix: AgenixResource, warehouse: WarehouseResource):
        config_dir, index_root = config_dir_of(agenix), agenix.paths.home / "index"
        asset = candidate_key.to_user_string()
        try:
            registries = core.load_registries(config_dir, use_case)
            spec = core.load_release_spec(config_dir, use_case)
        except ConfigError as exc:
            # Nothing resolves: record the failed verdict so a consumer in any later run refuses, then stop.
            verdict = gates.GateResult(asset, CANDIDATE_RESOLVES, False, f"registries invalid: {exc}",
                                       {"problems": str(exc)})
            with warehouse.connect() as con:
                gates.record_evaluation(con, [verdict], context.run_id, published=False)
            raise dg.Failure(description=str(exc), metadata={"error": str(exc)}) from None
        resolution = core.resolve_candidate(registries, spec,
                                            core.servable_index_versions(config_dir, index_root, use_case))
        c = resolution.candidate
        try:
            production = core.production_parts(config_dir, index_root, use_case, registries)
        except ConfigError as exc:
            context.log.warning(f"production release unreadable, compared with nothing: {exc}")
            production = None
        prod_name, prod = production if production else ("(none)", None)
        differs = core.differing_parts(c, prod)

        verdict = gates.GateResult(
            asset, CANDIDATE_RESOLVES, resolution.resolves,
            f"candidate {c.candidate_id} resolves" if resolution.resolves
            else f"candidate {c.candidate_id} does not resolve: " + "; ".join(resolution.problems),
            {"candidate_id": c.candidate_id, "candidate_hash": c.candidate_hash, "problems": resolution.problems,
             "model": c.model, "prompt_version": c.prompt_version, "index_version": c.index_version,
             "retrieval_version": c.retrieval_version, "servable_index_versions": resolution.servable_versions},
        )
        with warehouse.connect() as con:
            # Write, audit, publish: the row and its verdict become visible together.
            con.execute("BEGIN")
            try:
                core.ensure_schema(con)
                published = core.record_candidate(con, resolution, context.run_id)
                gates.record_evaluation(con, [verdict], context.run_id, published=published and resolution.resolves)
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        if not resolution.resolves:
            context.log.error(f"candidate {c.candidate_id} not published: " + "; ".join(resolution.problems))

        mine, theirs = c.parts(), prod.parts() if prod else {}
        rows = [
            {"part": p, "candidate": mine[p][0], "hash": mine[p][1],
             "production": theirs[p][0] if theirs else "", "production hash": theirs[p][1] if theirs else "",
             "differs": p in differs}
            for p in core.ResolvedCandidate.PARTS
        ]
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(c.candidate_hash),
            metadata={
                "candidate_id": c.candidate_id,
                "candidate_hash": c.candidate_hash,
                "model": c.model,
                "model_hash": c.model_hash,
                "prompt_version": c.prompt_version,
                "prompt_hash": c.prompt_hash,
                "index_version": c.index_version,
                "index_hash": c.index_hash,
                "retrieval_version": c.retrieval_version,
                "retrieval_hash": c.retrieval_hash,
                "production_release": prod_name,
                "differs_from_production": ", ".join(differs) or "(none)",
                "parts_differing": len(differs),
                "published": resolution.resolves,
                "parts": dg.MetadataValue.md(markdown_table(rows)),
                "candidate": dg.MetadataValue.json(c.as_dict()),
            },
        )
        yield dg.AssetCheckResult(
            check_name=CANDIDATE_RESOLVES,
            passed=resolution.resolves,
            description=verdict.description,
            metadata={
                "candidate_id": c.candidate_id,
                "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in resolution.problems) or "_none_"),
                "problem_count": len(resolution.problems),
                "index_version": c.index_version,
                "servable_index_versions": json.dumps(resolution.servable_versions),
            },
        )

    return [prompt_registry, retrieval_config, release_candidate]
