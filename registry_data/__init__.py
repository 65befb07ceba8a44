"""The embedded default registry: real Open311 endpoints and honest boundaries (see README.md)."""
