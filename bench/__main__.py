"""``python -m bench``: run every benchmark and write RESULTS.md and results.json."""

from .run import main

main()
