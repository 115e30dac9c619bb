"""The DuckDB warehouse: one file, one writer at a time.

Every asset that writes it runs in the `duckdb` concurrency pool (limit 1 in dagster.yaml), and a
connection is opened per use and closed right after, so the dbt subprocess and other steps can open the
file in turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

DUCKDB_POOL = "duckdb"


class WarehouseResource(dg.ConfigurableResource):
    """Path of the DuckDB warehouse file (embedded default: $AGENIX_HOME/warehouse.duckdb)."""

    path: str

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(self.path, read_only=read_only)
        try:
            yield con
        finally:
            con.close()
