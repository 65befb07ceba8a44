"""``geoweb serve`` under cProfile: ``python -m bench.profserve OUT.prof serve --db D --port P``.

Only what happens between SIGUSR1 (start profiling) and SIGUSR2 (stop, and write ``OUT.prof``) is
profiled, so that the profile is of the load alone: the server's start and its shutdown (whose
suspended coroutines cProfile charges with the time they waited) stay out of it. SIGINT stops the
server, as Ctrl-C would.
"""

from __future__ import annotations

import cProfile
import signal
import sys
from types import FrameType

from resolver.cli.main import main as geoweb


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    profile = cProfile.Profile()

    def start(_signum: int, _frame: FrameType | None) -> None:
        profile.enable()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        profile.disable()
        profile.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    # A process started in the background by a shell inherits SIGINT ignored, and then Ctrl-C's
    # signal would never stop the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    geoweb(args=args, prog_name="geoweb", standalone_mode=False)


if __name__ == "__main__":
    main()
