"""How the ``geoweb`` commands word what they print."""

from __future__ import annotations


def plural(count: int, singular: str, plural: str | None = None) -> str:
    """``1 jurisdiction``, ``2 jurisdictions``: a count with its noun in the right number."""
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


__all__ = ["plural"]
