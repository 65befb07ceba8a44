"""Developer tools, not shipped in the runtime packages."""
