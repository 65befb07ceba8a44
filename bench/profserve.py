"""``geoweb serve`` under cProfile: ``python -m bench.profserve OUT.prof serve --db D --port P``.

The profile is written when the server stops (SIGINT, as Ctrl-C would).
"""

from __future__ import annotations

import cProfile
import signal
import sys

from resolver.cli.main import main as geoweb


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    # A process started in the background by a shell inherits SIGINT ignored, and then Ctrl-C's
    # signal would never stop the server nor write the profile.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    profile = cProfile.Profile()
    profile.enable()
    try:
        geoweb(args=args, prog_name="geoweb", standalone_mode=False)
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
