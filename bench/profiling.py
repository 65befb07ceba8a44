"""Brief cProfile summaries, for the targets a run misses."""

from __future__ import annotations

import cProfile
import io
import pstats
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import REPO


def _short(path: str) -> str:
    if path.startswith(str(REPO)):
        return path[len(str(REPO)) + 1 :]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


#: Functions shown by cumulative time besides the top lists: the project's own code and the
#: parts of aiohttp's request path that tell framework cost from handler cost.
FOCUS = (
    "resolver/",
    "boundaries/",
    "web_protocol.py",
    "web_log.py",
    "web_app.py",
    "web_response.py",
    "(send)",
    "(dumps)",
)


def summary(stats: pstats.Stats, limit: int = 14) -> dict[str, Any]:
    """The top functions by own time and by cumulative time, as plain rows."""
    rows = []
    total = stats.total_tt  # type: ignore[attr-defined]
    for (filename, line, name), (_cc, calls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{_short(filename)}:{line}({name})",
                "calls": calls,
                "tottime_s": tt,
                "cumtime_s": ct,
                "tottime_pct": 100.0 * tt / total if total else 0.0,
            }
        )
    by_tt = sorted(rows, key=lambda r: r["tottime_s"], reverse=True)[:limit]
    by_ct = sorted(rows, key=lambda r: r["cumtime_s"], reverse=True)[:limit]
    focus = [
        r
        for r in sorted(rows, key=lambda r: r["cumtime_s"], reverse=True)
        if any(f in r["function"] for f in FOCUS) and "resolver/cli/main.py" not in r["function"]
    ][: 2 * limit]
    return {"total_s": total, "by_tottime": by_tt, "by_cumtime": by_ct, "focus": focus}


def profile_call(fn: Callable[[], Any], limit: int = 14) -> dict[str, Any]:
    profile = cProfile.Profile()
    profile.enable()
    fn()
    profile.disable()
    return summary(pstats.Stats(profile, stream=io.StringIO()), limit)


def profile_file(path: Path, limit: int = 14) -> dict[str, Any]:
    return summary(pstats.Stats(str(path), stream=io.StringIO()), limit)
