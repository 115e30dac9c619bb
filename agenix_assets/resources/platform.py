"""Where the platform lives: AGENIX_HOME (data, landing zone, reports) and the config/ folder."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ..core.config import ProjectConfig, default_config_dir, load_project_config
from ..core.paths import AgenixPaths

AS_OF_ENV = "AGENIX_AS_OF"


class AgenixResource(dg.ConfigurableResource):
    """The platform's home folder and its version-controlled configuration.

    Config is read from disk on every call, not cached at definition time, so an edit to a YAML file
    (a removed privacy review, a new KPI) takes effect in the next run without reloading the code location.
    Unset fields come from the environment when the resource is used, never when the code location is
    imported: ``home`` from $AGENIX_HOME (default .agenix), ``config_dir`` from $AGENIX_CONFIG_DIR (default the
    repository's config/), ``as_of`` from $AGENIX_AS_OF (default today).
    """

    home: str | None = None
    config_dir: str | None = None
    # Reference date for history windows (YYYY-MM-DD). Tests pin it.
    as_of: str | None = None

    @property
    def paths(self) -> AgenixPaths:
        return AgenixPaths(Path(self.home).resolve()) if self.home else AgenixPaths.from_env()

    @property
    def reference_date(self) -> str | None:
        """``as_of``, else $AGENIX_AS_OF; None means today."""
        return self.as_of or os.environ.get(AS_OF_ENV) or None

    def load_config(self) -> ProjectConfig:
        return load_project_config(Path(self.config_dir) if self.config_dir else default_config_dir())
