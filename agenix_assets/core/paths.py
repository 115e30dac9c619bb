"""Every path the platform uses derives from AGENIX_HOME (default: .agenix/ in the working directory)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def sample_golden_set_path(landing: Path, use_case: str) -> Path:
    """Where the sample generator writes a use case's golden set: with its other ground truth, not in config/,
    because the sample's documents depend on its seed."""
    return Path(landing) / "_manifest" / "golden" / f"{use_case}.yaml"


@dataclass(frozen=True)
class AgenixPaths:
    home: Path

    @classmethod
    def from_env(cls) -> AgenixPaths:
        # Read when called, never at import time, so tests can point AGENIX_HOME at a temp dir.
        return cls(Path(os.environ.get("AGENIX_HOME", ".agenix")).resolve())

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def manifest_dir(self) -> Path:
        """The sample generator's ground truth (planted PII, facts); not a source."""
        return self.landing / "_manifest"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def chroma(self) -> Path:
        return self.home / "chroma"
