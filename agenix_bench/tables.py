"""Formatting shared by the benchmark tables."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: "-" for nothing, thousands separators, ``digits`` decimals for floats."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
