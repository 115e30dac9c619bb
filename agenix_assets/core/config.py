"""Pydantic models of every YAML file under config/, and a loader whose errors name file, line and key.

Configuration is data under version control. A typo must never be silently ignored, so every model
forbids unknown keys, and every error says which file, which line, which key and what was expected.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .paths import sample_golden_set_path

if TYPE_CHECKING:
    from .golden import GoldenSuite

NAME_PATTERN = r"^[a-z][a-z0-9_]{1,62}$"
OWNER_PATTERN = r"^(team:[a-z][a-z0-9_-]*|[^@\s]+@[^@\s]+\.[a-z]+)$"


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or does not match its model."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- sources

ColumnType = Literal["string", "integer", "float", "decimal", "boolean", "date", "timestamp"]
SourceKind = Literal["sql", "csv", "jsonl", "parquet", "documents"]


class ColumnSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: ColumnType = "string"
    required: bool = False
    description: str = ""


class ChangeDetection(Strict):
    """How a load finds new and changed records.

    cursor: records whose cursor column is greater than the last loaded value (SQL sources query only
    those). content_hash: every record of a new or changed file is hashed and compared by primary key.
    In both modes, files whose bytes did not change since the last load are not read at all.
    """

    mode: Literal["cursor", "content_hash"]
    cursor_column: str | None = None

    @model_validator(mode="after")
    def _cursor_needs_column(self) -> ChangeDetection:
        if self.mode == "cursor" and not self.cursor_column:
            raise ValueError("mode 'cursor' needs cursor_column")
        if self.mode == "content_hash" and self.cursor_column:
            raise ValueError("cursor_column is only used with mode 'cursor'")
        return self


class SourceConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    kind: SourceKind
    # Relative paths are resolved against the landing zone ($AGENIX_HOME/landing).
    location: str
    # sql: the table to read. Files: a glob under location when location is a directory.
    table: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    pattern: str | None = None
    primary_key: str
    change_detection: ChangeDetection
    owner: str = Field(pattern=OWNER_PATTERN)
    data_domain: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    data_categories: list[str] = Field(min_length=1)
    privacy_review: str | None = None
    columns: list[ColumnSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> SourceConfig:
        if self.kind == "sql" and not self.table:
            raise ValueError("a sql source needs 'table'")
        if self.kind != "sql" and self.table:
            raise ValueError("'table' is only used by sql sources")
        if self.kind == "documents":
            if self.columns:
                raise ValueError("documents sources have fixed columns; remove 'columns'")
            if self.change_detection.mode != "content_hash":
                raise ValueError("documents sources use change_detection mode 'content_hash'")
        else:
            if not self.columns:
                raise ValueError(f"a {self.kind} source needs 'columns' (its schema contract)")
            names = [c.name for c in self.columns]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate column names: {dupes}")
            if self.primary_key not in names:
                raise ValueError(f"primary_key '{self.primary_key}' is not one of the columns {names}")
            cursor = self.change_detection.cursor_column
            if cursor and cursor not in names:
                raise ValueError(f"cursor_column '{cursor}' is not one of the columns {names}")
        return self

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


class SourcesFile(Strict):
    sources: list[SourceConfig]

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate source names: {dupes}")
        return sources


# ---------------------------------------------------------------- governance

RiskClass = Literal["low", "medium", "high"]


class Governed(Strict):
    """Governance metadata of a registry entry (a model, a prompt version, a retrieval configuration): who owns
    it, what it is for, how risky a change to it is. Optional here so a bare file (a test's, a sandbox's) still
    serves; the registries (core/registry.py) require all three and name every entry that lacks one."""

    owner: str | None = Field(default=None, pattern=OWNER_PATTERN)
    purpose: str | None = Field(default=None, min_length=1)
    risk_rating: RiskClass | None = None


class Kpi(Strict):
    name: str = Field(min_length=1)
    target: str = Field(min_length=1)
    baseline: str | None = None
    unit: str | None = None


class UseCaseCharter(Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9-]{2,62}$")
    name: str
    owner: str
    business_problem: str = ""
    target_users: list[str] = Field(default_factory=list)
    kpis: list[Kpi] = Field(default_factory=list)
    latency_target_ms_p95: int | None = Field(default=None, gt=0)
    uptime_target_percent: float | None = Field(default=None, gt=0, le=100)
    data_domains: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    risk_class: RiskClass
    dpia_reference: str | None = None
    regulatory_constraints: list[str] = Field(default_factory=list)


class ProcessingActivity(Strict):
    id: str
    name: str
    purposes: list[str] = Field(min_length=1)
    lawful_basis: Literal[
        "consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests"
    ]
    data_subjects: list[str] = Field(min_length=1)
    controller: str


class RegisteredSource(Strict):
    """What the processing register allows for one source: categories, fields and history."""

    activities: list[str] = Field(min_length=1)
    data_categories: list[str] = Field(min_length=1)
    allowed_fields: list[str] = Field(min_length=1)
    retention_days: int = Field(gt=0)
    # Only records newer than this many days reach the cleaned models (data minimization).
    history_window_days: int | None = Field(default=None, gt=0)
    history_column: str | None = None

    @model_validator(mode="after")
    def _window_needs_column(self) -> RegisteredSource:
        if (self.history_window_days is None) != (self.history_column is None):
            raise ValueError("history_window_days and history_column go together")
        return self


class ProcessingRegister(Strict):
    activities: list[ProcessingActivity] = Field(min_length=1)
    sources: dict[str, RegisteredSource]

    @model_validator(mode="after")
    def _known_activities(self) -> ProcessingRegister:
        ids = {a.id for a in self.activities}
        for name, src in self.sources.items():
            unknown = sorted(set(src.activities) - ids)
            if unknown:
                raise ValueError(f"source '{name}' refers to unknown activities {unknown}; known: {sorted(ids)}")
        return self


class PrivacyReview(Strict):
    id: str = Field(pattern=r"^[A-Z]+-[0-9]{4}-[0-9]{3}$")
    source: str
    reviewer: str
    role: str
    decided_at: dt.date
    outcome: Literal["approved", "approved_with_conditions", "rejected"]
    conditions: list[str] = Field(default_factory=list)


class PrivacyReviewsFile(Strict):
    reviews: list[PrivacyReview] = Field(default_factory=list)


class Risk(Strict):
    id: str
    use_case: str
    description: str
    likelihood: Literal["low", "medium", "high"]
    impact: Literal["low", "medium", "high"]
    mitigation: str
    owner: str
    status: Literal["open", "mitigated", "accepted", "closed"] = "open"


class RiskRegister(Strict):
    risks: list[Risk] = Field(default_factory=list)


# ---------------------------------------------------------------- RAG


class IndexedSource(Strict):
    """How one cleaned source becomes documents for the index: which fields hold id, title and text."""

    source: str
    id_field: str
    title_field: str | None = None
    # Joined with a blank line; every field after the first is labelled ("Resolution: ...").
    text_fields: list[str] = Field(min_length=1)
    format_field: str | None = None
    format: Literal["markdown", "html", "pdf", "text"] = "text"
    updated_field: str | None = None


class ChunkingSettings(Strict):
    max_tokens: int = Field(default=200, ge=8, le=256)
    overlap_tokens: int = Field(default=30, ge=0)
    min_tokens: int = Field(default=8, ge=0)


class PiiSettings(Strict):
    # Entity types masked before indexing (default: every type core/pii.py knows). The no_pii_in_chunks check
    # always scans for every type, so narrowing this list cannot let PII into the index unnoticed.
    mask_entities: list[str] | None = None
    # Exact strings never treated as PII, e.g. the company's public support hotline.
    allow_list: list[str] = Field(default_factory=list)


class IndexSettings(Strict):
    # How many ready versions to keep; older ones are garbage-collected after a successful build.
    retention_versions: int = Field(default=3, ge=1)
    # Layered versions: a small change becomes a delta collection over its parent's layers instead of a full copy.
    # A full copy (compaction) happens when the chain would exceed max_layers, or when the records outside the base
    # layer plus the masked ones would exceed max_overlay_fraction of the version. max_layers 1 = always full copies.
    max_layers: int = Field(default=8, ge=1)
    max_overlay_fraction: float = Field(default=0.2, ge=0, le=1)


class SmokeTestSettings(Strict):
    golden_set: str
    top_k: int = Field(default=5, ge=1)
    min_hit_rate: float = Field(default=1.0, ge=0, le=1)


class RagSettings(Governed):
    """config/rag/<use case>.yaml: what is indexed for a use case and how it is retrieved. Its ``version`` names
    the retrieval configuration in the registry; owner, purpose and risk_rating are its governance metadata."""

    use_case: str
    version: int = Field(ge=1)
    indexed_sources: list[IndexedSource] = Field(min_length=1)
    chunking: ChunkingSettings = ChunkingSettings()
    # Longer texts are skipped with a reason: one 20 MB file would otherwise be ~40,000 chunks to embed.
    max_document_chars: int = Field(default=2_000_000, gt=0)
    pii: PiiSettings = PiiSettings()
    index: IndexSettings = IndexSettings()
    retrieval: dict[str, Any] = Field(default_factory=dict)
    smoke_test: SmokeTestSettings


# ---------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map each key path in a YAML document to its 1-based line, for error messages."""
    index: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                index[(*path, key)] = key_node.start_mark.line + 1
                walk(value_node, (*path, key))
                index[(*path, key)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return index


def _describe(errors: ValidationError, path: Path, lines: dict[tuple[Any, ...], int]) -> str:
    parts = []
    for err in errors.errors():
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        line = None
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        key = ".".join(str(x) for x in loc) or "(top level)"
        where = f"{path}:{line}" if line else str(path)
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelled?)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
            if "input" in err and not isinstance(err["input"], (dict, list)):
                msg += f" (got {err['input']!r})"
        parts.append(f"{where}: {key}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(parts)


def load_yaml_model(path: Path, model: type[M]) -> M:
    """Read one YAML file into a model; every problem becomes a ConfigError naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        data = yaml.safe_load(text)
        lines = _line_index(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, lines)) from None


# ---------------------------------------------------------------- the project's config folder


def default_config_dir() -> Path:
    """config/ beside the package, unless AGENIX_CONFIG_DIR points elsewhere."""
    env = os.environ.get("AGENIX_CONFIG_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "config"


class ProjectConfig(Strict):
    """Everything under config/, validated together so cross-file references are checked once."""

    config_dir: Path
    sources: list[SourceConfig]
    use_cases: list[UseCaseCharter]
    processing_register: ProcessingRegister
    privacy_reviews: list[PrivacyReview]
    risk_register: RiskRegister
    rag: list[RagSettings] = Field(default_factory=list)

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"no source named '{name}' in {self.config_dir / 'sources.yaml'}")

    def rag_for(self, use_case: str) -> RagSettings:
        for r in self.rag:
            if r.use_case == use_case:
                return r
        raise KeyError(f"no RAG settings for use case '{use_case}' under {self.config_dir / 'rag'}")

    def smoke_test_golden_set(self, settings: RagSettings, landing: Path) -> tuple[Path, GoldenSuite]:
        """The golden set the retrieval smoke test asks, and its file.

        config's ``smoke_test.golden_set`` is written for the documents you put in the landing zone. The generated
        sample company is different for every seed, so it brings its own golden set (written with the data, from
        the facts its documents state); while the landing zone holds one for this use case, that one is used.
        """
        from .golden import load_golden  # golden.py builds on this module's loader

        generated = sample_golden_set_path(landing, settings.use_case)
        path = generated if generated.is_file() else self.config_dir / settings.smoke_test.golden_set
        golden = load_golden(path, settings.use_case)
        if not golden.queries:
            raise ConfigError(f"{path}: queries: the retrieval smoke test needs queries or answerable items that name "
                              "their expected_documents")
        return path, golden

    def review_for(self, source: SourceConfig) -> PrivacyReview | None:
        for r in self.privacy_reviews:
            if r.id == source.privacy_review:
                return r
        return None

    @property
    def files(self) -> dict[str, Path]:
        return config_files(self.config_dir)


def config_files(config_dir: Path) -> dict[str, Path]:
    gov = config_dir / "governance"
    return {
        "sources": config_dir / "sources.yaml",
        "processing_register": gov / "processing_register.yaml",
        "privacy_reviews": gov / "privacy_reviews.yaml",
        "risk_register": gov / "risk_register.yaml",
        "use_cases": config_dir / "use_cases",
        "rag": config_dir / "rag",
    }


def load_project_config(config_dir: Path | None = None) -> ProjectConfig:
    config_dir = Path(config_dir or default_config_dir())
    files = config_files(config_dir)
    sources = load_yaml_model(files["sources"], SourcesFile).sources
    use_case_dir = files["use_cases"]
    if not use_case_dir.is_dir():
        raise ConfigError(f"{use_case_dir}: folder of use-case charters not found")
    use_cases = [load_yaml_model(p, UseCaseCharter) for p in sorted(use_case_dir.glob("*.yaml"))]
    ids = [u.id for u in use_cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{use_case_dir}: duplicate use-case ids {dupes}")
    rag = (
        [load_yaml_model(p, RagSettings) for p in sorted(files["rag"].glob("*.yaml"))] if files["rag"].is_dir() else []
    )
    known_use_cases = set(ids)
    known_sources = {s.name for s in sources}
    for settings, path in zip(rag, sorted(files["rag"].glob("*.yaml")) if rag else []):
        if settings.use_case not in known_use_cases:
            raise ConfigError(f"{path}: use_case '{settings.use_case}' has no charter in {use_case_dir}")
        for entry in settings.indexed_sources:
            if entry.source not in known_sources:
                raise ConfigError(f"{path}: indexed source '{entry.source}' is not configured in {files['sources']}")
    return ProjectConfig(
        config_dir=config_dir,
        rag=rag,
        sources=sources,
        use_cases=use_cases,
        processing_register=load_yaml_model(files["processing_register"], ProcessingRegister),
        privacy_reviews=load_yaml_model(files["privacy_reviews"], PrivacyReviewsFile).reviews,
        risk_register=load_yaml_model(files["risk_register"], RiskRegister),
    )


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
