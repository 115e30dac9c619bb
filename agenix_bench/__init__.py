"""Benchmarks run from the `agenix bench ...` CLI (not part of the Dagster graph)."""
