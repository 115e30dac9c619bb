"""The vector store (Chroma): embedded (a folder, one process) locally, a Chroma server when several
processes share the index (`make demo`, production)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import dagster as dg

from ..core.index import VectorIndexStore, chroma_client


class VectorStoreResource(dg.ConfigurableResource):
    """mode "embedded" uses `path`; mode "server" talks HTTP to `url` (e.g. http://127.0.0.1:8000)."""

    mode: str = "embedded"
    path: str | None = None
    url: str | None = None
    namespace: str = "agenix"

    def store(self) -> VectorIndexStore:
        if self.mode == "server":
            parsed = urlparse(self.url or "http://127.0.0.1:8000")
            client = chroma_client("server", host=parsed.hostname or "127.0.0.1", port=parsed.port or 8000)
        elif self.mode == "embedded":
            client = chroma_client("embedded", path=Path(self.path or ".agenix/chroma"))
        else:
            raise ValueError(f"vector store mode must be 'embedded' or 'server', not {self.mode!r}")
        return VectorIndexStore(client, namespace=self.namespace)

    @property
    def location(self) -> str:
        return self.url if self.mode == "server" else str(self.path)
