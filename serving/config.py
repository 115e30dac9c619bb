"""Gateway configuration: the model registry, gateway settings and the live deployment manifest.

All three are YAML under ``config/`` (version-controlled), validated by pydantic models that forbid unknown keys;
every error names the file, line and key (``agenix_assets.core.config.load_yaml_model``).

* ``config/gateway/models.yaml``: every backend the gateway may call (OpenAI-compatible HTTP servers such as
  llama.cpp's server or vLLM, the in-process extractive answerer and embedder) with its price, size class,
  quality tier, prompt style, context length and timeouts.
* ``config/gateway/gateway.yaml``: port, body limit, per-key and per-team limits and budgets, routing rules,
  request-log policy, where the operational endpoints are served, and per use case its RAG settings and
  guardrails. ``config/gateway/gateway.<environment>.yaml``, when present, overrides top-level keys of it for one
  environment (``gateway.production.yaml``: metrics and API docs off the public port).
* ``config/deployments/<environment>.yaml``: which release (model, prompt version, index version) serves each
  use case, with an optional canary and shadow release. Reloaded while the gateway runs (see manifest.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from agenix_assets.core.config import ConfigError, Governed, Strict, load_yaml_model

from .guardrails import TopicRule
from .limits import cost_of

MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str) -> str:
    """``${NAME}`` / ``${NAME:-default}`` from the environment, so one registry serves laptop and cluster."""

    def sub(m: re.Match) -> str:
        got = os.environ.get(m.group(1))
        if got is None:
            if m.group(2) is None:
                raise ValueError(f"environment variable {m.group(1)} is not set and has no default")
            return m.group(2)
        return got

    return _ENV_REF.sub(sub, value)


# ------------------------------------------------------------------------------------------------ model registry


class ModelSpec(Governed):
    """One backend. ``kind``: ``openai`` (an OpenAI-compatible HTTP server), ``extractive`` (sentences chosen from
    the retrieved context, in-process) or ``embedding`` (the local embedder, for /v1/embeddings). ``owner``,
    ``purpose`` and ``risk_rating`` are its governance metadata (required by the model registry asset)."""

    name: str = Field(pattern=MODEL_NAME)
    kind: Literal["openai", "extractive", "embedding"] = "openai"
    description: str = ""
    enabled: bool = True
    base_url: str | None = None  # e.g. http://127.0.0.1:8081/v1 ; ${ENV:-default} expanded
    backend_model: str | None = None  # the name the backend knows the model by (default: name)
    api_key_env: str | None = None  # environment variable holding the backend's key, if it needs one
    size: Literal["small", "large"] = "small"
    quality_tier: int = Field(default=1, ge=0, le=9)
    prompt_style: Literal["chat", "completion", "none"] = "chat"
    price_per_1k_input: float = Field(default=0.0, ge=0)
    price_per_1k_output: float = Field(default=0.0, ge=0)
    context_length: int = Field(default=4096, ge=128)
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    max_connections: int = Field(default=256, ge=1)
    fallbacks: list[str] = Field(default_factory=list)  # tried in order when this backend fails or times out
    # Where real token counts of a stream come from when the backend's stream carries no usage: llama-cpp-python's
    # server ignores stream_options, so its own tokenizer counts (POST /extras/tokenize/count). vLLM and llama.cpp's
    # llama-server report usage in the stream and need nothing here.
    tokenize: Literal["llama-cpp-python"] | None = None

    @model_validator(mode="after")
    def _openai_needs_url(self) -> ModelSpec:
        if self.kind == "openai" and not self.base_url:
            raise ValueError(f"model {self.name!r}: kind 'openai' needs base_url")
        if self.kind == "embedding" and self.prompt_style != "none":
            raise ValueError(f"model {self.name!r}: an embedding model has prompt_style 'none'")
        return self

    def url(self) -> str:
        assert self.base_url is not None
        try:
            return expand_env(self.base_url).rstrip("/")
        except ValueError as exc:
            raise ConfigError(f"model {self.name!r} base_url: {exc}") from exc

    @property
    def upstream_name(self) -> str:
        return self.backend_model or self.name

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return cost_of(tokens_in, tokens_out, self.price_per_1k_input, self.price_per_1k_output)


class ModelRegistry(Strict):
    currency: str = "EUR"
    models: list[ModelSpec]

    @model_validator(mode="after")
    def _unique_and_known_fallbacks(self) -> ModelRegistry:
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names must be unique; repeated: {dup}")
        for m in self.models:
            unknown = [f for f in m.fallbacks if f not in names]
            if unknown:
                raise ValueError(f"model {m.name!r} falls back to unknown model(s) {unknown}; known: {names}")
        return self

    def get(self, name: str) -> ModelSpec | None:
        for m in self.models:
            if m.name == name and m.enabled:
                return m
        return None

    def generators(self) -> list[ModelSpec]:
        return [m for m in self.models if m.enabled and m.kind in ("openai", "extractive")]


# ------------------------------------------------------------------------------------------------ gateway settings


class TeamSettings(Strict):
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    monthly_budget: float | None = Field(default=None, ge=0)


class LimitSettings(Strict):
    key_rpm: int | None = Field(default=600, ge=1)  # default per key; a key may carry its own
    key_tpm: int | None = Field(default=200_000, ge=1)
    default_team: TeamSettings = TeamSettings()


class RequestLogSettings(Strict):
    dir: str = "logs"  # relative to AGENIX_HOME
    # What of the request and answer text is written: the redacted text, an HMAC-SHA256 of it keyed with
    # $AGENIX_LOG_HMAC_KEY (required with 'hashed'), or nothing.
    content: Literal["redacted", "hashed", "none"] = "redacted"
    flush_interval_s: float = Field(default=1.0, gt=0, le=10)
    rotate_mb: float = Field(default=64, gt=0)
    rotate_minutes: float = Field(default=60, gt=0)


class CircuitBreakerSettings(Strict):
    failures: int = Field(default=3, ge=1)  # consecutive failures that open the circuit
    cooldown_s: float = Field(default=30.0, gt=0)  # how long an open circuit refuses calls before one trial


class RoutingSettings(Strict):
    large_prompt_tokens: int = Field(default=800, ge=1)  # longer prompts want a large model
    large_markers: list[str] = Field(
        default_factory=lambda: ["step by step", "compare", "analyse", "analyze", "explain why", "summarise",
                                 "summarize", "draft", "write a", "rewrite", "translate", "plan"]
    )
    simple_max_tokens: int = Field(default=25, ge=1)  # a simple factual question is short (words) ...
    simple_markers: list[str] = Field(  # ... and starts like a lookup
        default_factory=lambda: ["what", "what's", "when", "where", "which", "who", "how many", "how much",
                                 "how long", "how often", "is there", "does", "do you", "can i"]
    )
    # False: a lookup *starts* with a marker. True: a marker anywhere, or a question mark at the end, makes a short
    # question a lookup ("my GV-4150 is installed - how many hours should it run at reduced load?"): customers put
    # their situation first. Lookups go to the use case's simple tier first (the extractive answerer); the LLM
    # answers when that finds no sentence relevant enough.
    simple_markers_anywhere: bool = False
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()


class ScopeRule(TopicRule):
    """Questions the use case's knowledge base cannot answer by its nature (a support assistant's documents hold
    no prices, stock levels or order status): keywords and/or patterns (``TopicRule``), except when one of the
    ``unless`` patterns also matches ("how much does it cost to return a part?" is the returns policy's)."""

    unless: list[str] = []

    @model_validator(mode="after")
    def _compile_unless(self) -> ScopeRule:
        for p in self.unless:
            try:
                re.compile(p, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"scope rule {self.name!r}: invalid unless pattern {p!r}: {exc}") from None
        return self

    def applies(self, text: str) -> bool:
        return self.match(text) is not None and not any(re.search(p, text, re.IGNORECASE) for p in self.unless)


class UseCaseSettings(Strict):
    """A use case as a model: ``model: "support-assistant"`` runs its RAG path."""

    rag_config: str  # config/rag/<file>.yaml: where its index lives and how it is retrieved
    prompts: str  # config/prompts/<file>.yaml
    quality_tier: int = Field(default=1, ge=0)  # the cheapest model at or above this tier answers ...
    simple_quality_tier: int | None = Field(default=None, ge=0)  # ... or at or above this one for simple questions
    top_k: int = Field(default=4, ge=1, le=50)
    min_relevance: float = Field(default=0.25, ge=-1, le=1)  # best dense similarity below this: "I don't know"
    context_chars: int = Field(default=1800, ge=200)
    # Sources whose passages answer before any other's (manuals and policies over customers' tickets): when one
    # of them is relevant, the others are left out of what the answer is made from (they stay in the sources).
    authoritative_sources: list[str] = Field(default_factory=list)
    # With authoritative sources, retrieval searches top_k x this many and puts their relevant passages first.
    authoritative_pool: int = Field(default=3, ge=1, le=10)
    # When the extractive tier finds no sentence in the retrieved context that answers the question, say "I don't
    # know" instead of asking the next model in the chain (which, given the same context, can only guess).
    # Backend failures still fall back.
    no_answer_is_final: bool = False
    # config/glossary/<file>.yaml: customers' words for the knowledge base's (serving.glossary). Retrieval and the
    # extractive tier also look for the KB words of the customer phrases a question holds.
    glossary: str | None = None
    # Questions outside what the knowledge base can answer get the no-answer text at once (no retrieval, no model):
    # a product's figure is no answer to "what does it cost?".
    out_of_scope: list[ScopeRule] = Field(default_factory=list)
    guardrails: dict[str, Any] = Field(default_factory=dict)  # serving.guardrails.GuardrailPolicy


Exposure = Literal["public", "admin", "off"]


class AdminSettings(Strict):
    """Where the operational endpoints are served: ``public`` on the API port, ``admin`` only on the admin
    listener (``host``:``port``, loopback by default, for Prometheus and operators), or ``off``.

    ``metrics`` is ``GET /metrics``; ``docs`` is ``/docs``, ``/redoc`` and ``/openapi.json``. Both describe the
    service to whoever can reach them (traffic by team and model, every route), so production keeps them off the
    public port. The admin listener also answers ``/healthz`` and ``/readyz``."""

    metrics: Exposure = "public"
    docs: Exposure = "public"
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _admin_needs_port(self) -> AdminSettings:
        wanted = [name for name in ("metrics", "docs") if getattr(self, name) == "admin"]
        if wanted and self.port is None:
            raise ValueError(f"admin.port is required when {' and '.join(wanted)} {'is' if len(wanted) == 1 else 'are'} "
                             f"served on the admin listener ('admin')")
        return self


class GatewaySettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    environment: str = Field(default="local", pattern=r"^[a-z][a-z0-9_-]*$")
    manifest: str = "deployments/{environment}.yaml"  # relative to the config folder
    manifest_poll_s: float = Field(default=1.0, gt=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    limits: LimitSettings = LimitSettings()
    teams: dict[str, TeamSettings] = Field(default_factory=dict)
    routing: RoutingSettings = RoutingSettings()
    request_log: RequestLogSettings = RequestLogSettings()
    direct_guardrails: dict[str, Any] = Field(default_factory=dict)  # policy for requests that name a model
    use_cases: dict[str, UseCaseSettings] = Field(default_factory=dict)
    admin: AdminSettings = AdminSettings()

    @model_validator(mode="after")
    def _admin_port_differs(self) -> GatewaySettings:
        if self.admin.port is not None and self.admin.port == self.port:
            raise ValueError(f"admin.port must differ from port ({self.port}): the admin listener is a second socket")
        return self

    @field_validator("use_cases")
    @classmethod
    def _use_case_names(cls, v: dict[str, UseCaseSettings]) -> dict[str, UseCaseSettings]:
        for name in v:
            if not re.match(MODEL_NAME, name):
                raise ValueError(f"use case name {name!r} must match {MODEL_NAME}")
        return v

    def team(self, name: str) -> TeamSettings:
        return self.teams.get(name, self.limits.default_team)


# ------------------------------------------------------------------------------------------------ deployment manifest


class Release(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    model: str  # a registry model, or "auto": routing picks per request
    prompt_version: str
    index_version: int | Literal["live"] = "live"  # "live": the newest ready index version
    # Written by the deployer for an approved release: its hash ("release") and each part's content hash
    # (model, prompt_version, index_version, retrieval_version). The gateway refuses a manifest whose pins no
    # longer match config/ (a prompt edited in place after approval), so only what was approved serves.
    pins: dict[str, str] | None = None


class CanaryRelease(Strict):
    release: Release
    weight: float = Field(ge=0, le=1)  # share of keys (sticky per key) that get the canary


class ShadowRelease(Strict):
    release: Release
    sample_rate: float = Field(default=1.0, ge=0, le=1)


class UseCaseDeployment(Strict):
    release: Release
    canary: CanaryRelease | None = None
    shadow: ShadowRelease | None = None


class DeploymentManifest(Strict):
    environment: str
    use_cases: dict[str, UseCaseDeployment] = Field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ loading


class EnvironmentOverrides(Strict):
    """``gateway.<environment>.yaml``: the top-level keys one environment sets differently. Each given key
    replaces the base file's key as a whole (no deep merge: what runs is what the override file shows)."""

    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    max_body_bytes: int | None = Field(default=None, ge=1024)
    limits: LimitSettings | None = None
    request_log: RequestLogSettings | None = None
    admin: AdminSettings | None = None


def apply_environment_overrides(settings: GatewaySettings, path: Path) -> GatewaySettings:
    if not path.is_file():
        return settings
    overrides = load_yaml_model(path, EnvironmentOverrides)
    merged = settings.model_dump() | overrides.model_dump(exclude_unset=True)
    try:
        return GatewaySettings.model_validate(merged)
    except ValidationError as exc:  # a rule across keys of both files (admin.port equal to port)
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
        raise ConfigError(f"{path}: with gateway.yaml: {problems}") from None



class GatewayConfig:
    """Everything the gateway reads from the config folder at start (the manifest is reloaded separately)."""

    def __init__(self, config_dir: Path, settings: GatewaySettings, registry: ModelRegistry):
        self.config_dir = Path(config_dir)
        self.settings = settings
        self.registry = registry

    @property
    def manifest_path(self) -> Path:
        return self.config_dir / self.settings.manifest.format(environment=self.settings.environment)

    def live_manifest_path(self, home: Path) -> Path:
        """The manifest in force: the one the deployer last wrote (AGENIX_HOME/deployments/<environment>.yaml), or
        the one shipped in config/ until a release has been deployed to this environment."""
        from agenix_assets.core.deployment import deployed_manifest_path

        deployed = deployed_manifest_path(home, self.settings.environment)
        return deployed if deployed.is_file() else self.manifest_path

    def resolve(self, relative: str) -> Path:
        return self.config_dir / relative

    @property
    def settings_path(self) -> Path:
        return self.config_dir / "gateway" / "gateway.yaml"

    @classmethod
    def load(cls, config_dir: Path, environment: str | None = None) -> GatewayConfig:
        config_dir = Path(config_dir)
        settings = load_yaml_model(config_dir / "gateway" / "gateway.yaml", GatewaySettings)
        registry = load_yaml_model(config_dir / "gateway" / "models.yaml", ModelRegistry)
        if environment:
            settings = settings.model_copy(update={"environment": environment})
        settings = apply_environment_overrides(settings, config_dir / "gateway" / f"gateway.{settings.environment}.yaml")
        for uc, s in settings.use_cases.items():
            for rel in (s.rag_config, s.prompts):
                if not (config_dir / rel).is_file():
                    raise ConfigError(f"{config_dir / 'gateway' / 'gateway.yaml'}: use_cases.{uc}: file {rel} not found")
        for m in registry.models:
            if m.kind == "openai" and m.enabled:
                m.url()  # an unset ${VAR} without default fails here, naming the model
        return cls(config_dir, settings, registry)
