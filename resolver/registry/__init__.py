"""Registries: the embedded one, imports, exports, mirroring and registration."""
