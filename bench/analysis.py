"""The reading of a profile, computed from that run's profile (never written by hand)."""

from __future__ import annotations

from typing import Any


def read_profile(profile: dict[str, Any]) -> str:
    """One paragraph: the profiled seconds, the share of own time per category, largest first,
    and the three functions with the most own time."""
    shares = sorted(profile.get("categories", {}).items(), key=lambda kv: kv[1], reverse=True)
    parts = ", ".join(f"{name} {share:.0f}%" for name, share in shares)
    top = ", ".join(
        f"`{row['function']}` {row['tottime_pct']:.0f}%" for row in profile["by_tottime"][:3]
    )
    return (
        f"Of {profile['total_s']:.2f} s of profiled own time (cProfile; its overhead inflates "
        f"Python-level calls): {parts}. Largest single functions: {top}."
    )
