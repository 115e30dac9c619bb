"""Where the platform lives: AGENIX_HOME (data, landing zone, reports) and the config/ folder."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ..core.config import ProjectConfig, load_project_config
from ..core.paths import AgenixPaths


class AgenixResource(dg.ConfigurableResource):
    """The platform's home folder and its version-controlled configuration.

    Config is read from disk on every call, not cached at definition time, so an edit to a YAML file
    (a removed privacy review, a new KPI) takes effect in the next run without reloading the code location.
    """

    home: str
    config_dir: str
    # Reference date for history windows (YYYY-MM-DD); unset means today. Tests pin it.
    as_of: str | None = None

    @property
    def paths(self) -> AgenixPaths:
        return AgenixPaths(Path(self.home).resolve())

    def load_config(self) -> ProjectConfig:
        return load_project_config(Path(self.config_dir))
