"""Small helpers the study modules share."""

from __future__ import annotations


def as_list(v) -> list:
    """A single value (a string counts as one) as a one-item list; any other iterable as a list."""
    return [v] if isinstance(v, str) or not hasattr(v, "__iter__") else list(v)
