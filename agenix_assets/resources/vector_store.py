"""The vector store (Chroma): embedded (a folder, one process) locally, a Chroma server when several
processes share the index (`make demo`, production)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg

from ..core.index import VectorIndexStore, chroma_client
from ..core.paths import AgenixPaths
from ..sandbox import SandboxViolation, assert_writable, is_sandbox

CHROMA_URL_ENV = "AGENIX_CHROMA_URL"


class VectorStoreResource(dg.ConfigurableResource):
    """mode "embedded" uses `path`; mode "server" talks HTTP to `url` (e.g. http://127.0.0.1:8000).

    Unset fields are resolved when the store is used, not when the code location is imported: `url` from
    $AGENIX_CHROMA_URL, `mode` is "server" when there is a URL and "embedded" otherwise, `path` is
    $AGENIX_HOME/chroma.
    """

    mode: str | None = None
    path: str | None = None
    url: str | None = None
    namespace: str = "agenix"

    @property
    def server_url(self) -> str | None:
        return self.url or os.environ.get(CHROMA_URL_ENV) or None

    @property
    def resolved_mode(self) -> str:
        return self.mode or ("server" if self.server_url else "embedded")

    @property
    def folder(self) -> Path:
        return Path(self.path) if self.path else AgenixPaths.from_env().chroma

    def store(self) -> VectorIndexStore:
        mode = self.resolved_mode
        if mode == "server" and is_sandbox():
            # A Chroma server may be production's (`agenix up` shares one): a sandbox keeps its own embedded store.
            raise SandboxViolation(self.location, AgenixPaths.from_env().home,
                                   "a Chroma server; a sandbox uses its embedded store: unset AGENIX_CHROMA_URL")
        if mode == "server":
            parsed = urlparse(self.server_url or "http://127.0.0.1:8000")
            client = chroma_client("server", host=parsed.hostname or "127.0.0.1", port=parsed.port or 8000)
        elif mode == "embedded":
            client = chroma_client("embedded", path=assert_writable(self.folder))
        else:
            raise ValueError(f"vector store mode must be 'embedded' or 'server', not {mode!r}")
        return VectorIndexStore(client, namespace=self.namespace)

    @property
    def location(self) -> str:
        return (self.server_url or "http://127.0.0.1:8000") if self.resolved_mode == "server" else str(self.folder)
