"""The resolution core, the store, registries, the HTTP API and the CLI of GeoWeb DNS."""
