"""A process's own peak memory, read so that its parent's does not leak into it.

``ru_maxrss`` will not do: Linux copies a parent's high-water mark into the child at fork and
keeps it across exec, so a fresh process started by a bench that once held 6 GB reports 6 GB.
The mark of the process's own address space (``VmHWM``) starts afresh at exec, and can be
reset (``/proc/self/clear_refs``), so one process can measure several steps in turn.
"""

from __future__ import annotations

from pathlib import Path


def _status_kib(field: str, pid: int | str = "self") -> int:
    status = Path(f"/proc/{pid}/status")
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in {status} (this needs Linux)")


def peak_rss_kib(pid: int | str = "self") -> int:
    """The most a process (this one by default) has had resident since it started or since
    :func:`reset_peak_rss`."""
    return _status_kib("VmHWM", pid)


def rss_kib() -> int:
    """What this process has resident now."""
    return _status_kib("VmRSS")


def reset_peak_rss() -> None:
    """Start the peak afresh from what is resident now (Linux 4.0 and later)."""
    Path("/proc/self/clear_refs").write_text("5")
