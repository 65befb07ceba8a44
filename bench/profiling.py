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


#: Where a server's own time goes, by the function's file or name (first match wins); what
#: matches none is "other" (the event loop, the interpreter, the standard library).
CATEGORIES = (
    (
        "access log",
        (
            "web_log.py",
            "logging/__init__.py",
            "resolver/http/serving.py:",  # only its log, add and flush run per request
            "(strftime)",
        ),
    ),
    ("socket writes", ("(send)", "(write)", "(writelines)", "_http_writer", "http_writer.py")),
    ("HTTP parsing", ("http_parser.py", "(feed_data)", "_http_parser")),
    ("index lookup (boundaries/)", ("boundaries/",)),
    ("our handlers and middlewares (resolver/)", ("resolver/",)),
    ("aiohttp request handling", ("aiohttp/",)),
)


def categories(rows: list[dict[str, Any]], total: float) -> dict[str, float]:
    """Share of profiled own time per :data:`CATEGORIES` entry, in percent."""
    shares = dict.fromkeys([name for name, _ in CATEGORIES] + ["other"], 0.0)
    for row in rows:
        for name, patterns in CATEGORIES:
            if any(p in row["function"] for p in patterns):
                shares[name] += row["tottime_s"]
                break
        else:
            shares["other"] += row["tottime_s"]
    return {k: 100.0 * v / total if total else 0.0 for k, v in shares.items()}


def summary(stats: pstats.Stats, limit: int = 14) -> dict[str, Any]:
    """The top functions by own time and by cumulative time, as plain rows, and the share of
    own time per category."""
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
    return {
        "total_s": total,
        "by_tottime": by_tt,
        "by_cumtime": by_ct,
        "focus": focus,
        "categories": categories(rows, total),
    }


def profile_call(fn: Callable[[], Any], limit: int = 14) -> dict[str, Any]:
    profile = cProfile.Profile()
    profile.enable()
    fn()
    profile.disable()
    return summary(pstats.Stats(profile, stream=io.StringIO()), limit)


def profile_file(path: Path, limit: int = 14) -> dict[str, Any]:
    return summary(pstats.Stats(str(path), stream=io.StringIO()), limit)
