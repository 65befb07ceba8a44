"""GeoWeb DNS benchmarks: ``python -m bench`` (see bench/RESULTS.md for the latest figures)."""
