"""Governance gates as plain functions: each returns a Finding with the evidence an auditor needs.

The Dagster checks in assets/governance.py and assets/sources.py only wrap these, so the rules are
tested directly and read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import ProjectConfig, SourceConfig, UseCaseCharter

# Charter fields that must be filled before a use case may enter the pipeline (seed step 1.1).
REQUIRED_CHARTER_FIELDS = (
    "business_problem",
    "target_users",
    "kpis",
    "latency_target_ms_p95",
    "uptime_target_percent",
    "data_domains",
    "sources",
)
APPROVED_OUTCOMES = ("approved", "approved_with_conditions")


@dataclass(frozen=True)
class Finding:
    """The outcome of one gate: passed or not, a sentence saying why, and the evidence."""

    passed: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict, tuple)) and len(value) == 0) or (
        isinstance(value, str) and not value.strip()
    )


def missing_charter_fields(charter: UseCaseCharter) -> list[str]:
    missing = [name for name in REQUIRED_CHARTER_FIELDS if _blank(getattr(charter, name))]
    missing += [f"kpis[{i}].target" for i, k in enumerate(charter.kpis) if _blank(k.target)]
    return missing


def charters_complete(charters: list[UseCaseCharter]) -> Finding:
    gaps = {c.id: missing_charter_fields(c) for c in charters}
    gaps = {k: v for k, v in gaps.items() if v}
    if not charters:
        return Finding(False, "no use-case charters found under config/use_cases/", {"charters": 0})
    if gaps:
        detail = "; ".join(f"{uc}: missing {', '.join(fields)}" for uc, fields in sorted(gaps.items()))
        return Finding(False, f"incomplete charters: {detail}", {"incomplete": gaps, "charters": len(charters)})
    return Finding(True, f"all {len(charters)} charters complete", {"charters": len(charters)})


def high_risk_has_dpia(charters: list[UseCaseCharter]) -> Finding:
    """A high-risk use case needs a DPIA reference (GDPR Art. 35) before it may proceed."""
    lacking = sorted(c.id for c in charters if c.risk_class == "high" and _blank(c.dpia_reference))
    high = sorted(c.id for c in charters if c.risk_class == "high")
    if lacking:
        return Finding(
            False,
            f"high-risk use cases without a DPIA reference: {', '.join(lacking)} (set dpia_reference in the charter)",
            {"high_risk": high, "missing_dpia": lacking},
        )
    return Finding(True, f"{len(high)} high-risk use case(s), all with a DPIA reference", {"high_risk": high})


def use_case_sources_registered(config: ProjectConfig) -> Finding:
    """Every source a use case reads exists and is registered in the RoPA with its data categories."""
    configured = {s.name: s for s in config.sources}
    register = config.processing_register.sources
    problems: list[str] = []
    for charter in config.use_cases:
        for name in charter.sources:
            if name not in configured:
                problems.append(f"{charter.id}: source '{name}' is not configured in sources.yaml")
            elif name not in register:
                problems.append(f"{charter.id}: source '{name}' is not in the processing register")
            else:
                unregistered = sorted(set(configured[name].data_categories) - set(register[name].data_categories))
                if unregistered:
                    problems.append(
                        f"{charter.id}: source '{name}' carries data categories {unregistered} "
                        "that the processing register does not record for it"
                    )
    checked = sum(len(c.sources) for c in config.use_cases)
    if problems:
        return Finding(False, "; ".join(problems), {"problems": problems, "sources_checked": checked})
    return Finding(True, f"all {checked} use-case sources are registered", {"sources_checked": checked})


def source_registered(source: SourceConfig, config: ProjectConfig) -> Finding:
    entry = config.processing_register.sources.get(source.name)
    if entry is None:
        return Finding(
            False,
            f"source '{source.name}' is not in the processing register "
            f"({config.files['processing_register']}: sources.{source.name})",
            {"source": source.name},
        )
    unregistered = sorted(set(source.data_categories) - set(entry.data_categories))
    evidence = {
        "source": source.name,
        "declared_categories": list(source.data_categories),
        "registered_categories": list(entry.data_categories),
        "activities": list(entry.activities),
    }
    if unregistered:
        return Finding(
            False,
            f"source '{source.name}' carries data categories {unregistered} that the processing register "
            f"does not record for it",
            evidence,
        )
    return Finding(True, f"source '{source.name}' is registered under {', '.join(entry.activities)}", evidence)


def privacy_review_recorded(source: SourceConfig, config: ProjectConfig) -> Finding:
    """A source may be ingested only after an approved privacy review for it is on record (seed step 9.2)."""
    reviews_file = config.files["privacy_reviews"]
    if _blank(source.privacy_review):
        return Finding(
            False,
            f"source '{source.name}' has no privacy review: set privacy_review in sources.yaml to an approved "
            f"review recorded in {reviews_file}",
            {"source": source.name},
        )
    review = config.review_for(source)
    if review is None:
        return Finding(
            False,
            f"source '{source.name}' names privacy review '{source.privacy_review}', which is not recorded in "
            f"{reviews_file}",
            {"source": source.name, "privacy_review": source.privacy_review},
        )
    evidence = {
        "source": source.name,
        "privacy_review": review.id,
        "reviewer": review.reviewer,
        "role": review.role,
        "decided_at": review.decided_at.isoformat(),
        "outcome": review.outcome,
        "conditions": list(review.conditions),
    }
    if review.source != source.name:
        return Finding(
            False,
            f"privacy review '{review.id}' was recorded for source '{review.source}', not '{source.name}'",
            evidence,
        )
    if review.outcome not in APPROVED_OUTCOMES:
        return Finding(False, f"privacy review '{review.id}' of source '{source.name}' was {review.outcome}", evidence)
    return Finding(
        True,
        f"privacy review {review.id} {review.outcome} by {review.reviewer} ({review.role}) on {review.decided_at}",
        evidence,
    )


def fields_within_register(model_columns: dict[str, list[str]], config: ProjectConfig) -> Finding:
    """Data minimization: each cleaned model keeps only the fields the register allows for its source.

    model_columns maps a source name to the columns of its cleaned model.
    """
    problems = []
    for source, columns in sorted(model_columns.items()):
        entry = config.processing_register.sources.get(source)
        if entry is None:
            problems.append(f"cleaned_{source}: source not in the processing register")
            continue
        extra = sorted(set(columns) - set(entry.allowed_fields))
        if extra:
            problems.append(f"cleaned_{source}: fields {extra} are not allowed by the processing register")
    evidence = {"models_checked": len(model_columns), "problems": problems}
    if problems:
        return Finding(False, "; ".join(problems), evidence)
    return Finding(True, f"all {len(model_columns)} cleaned models keep only allowed fields", evidence)
