"""Python code run in a process of its own: for what one test must measure alone (its peak
memory, its heap), away from the test runner's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child_output(code: str, timeout: float = 120) -> str:
    """What ``code`` prints, run by a fresh interpreter in the repository; fails the test with
    the child's stderr when it does not succeed."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
