"""The one exception tree of GeoWeb DNS.

Every error carries the fields a caller needs (not just a message) and an HTTP ``status``, so
the API's error middleware, the CLI and tests all read the same facts. The class docstring is
the default message.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GeoWebError(Exception):
    """GeoWeb DNS could not do what was asked."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, detail: str | None = None, **fields: Any) -> None:
        self.detail = detail or (self.__doc__ or self.code).strip().splitlines()[0]
        self.fields = fields
        super().__init__(self.detail)

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": code, "detail": message, ...fields}``."""
        body: dict[str, Any] = {"error": self.code, "detail": self.detail}
        body.update({k: v for k, v in self.fields.items() if _is_plain(v)})
        return body


def _is_plain(value: Any) -> bool:
    if isinstance(value, str | int | float | bool) or value is None:
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    return False


class InvalidInput(GeoWebError):
    """The request is malformed."""

    status = 400
    code = "invalid_input"


class MissingParameter(InvalidInput):
    """A required parameter is missing."""

    code = "missing_parameter"

    def __init__(self, name: str) -> None:
        super().__init__(f"the parameter {name!r} is required", parameter=name)


class InvalidCoordinates(InvalidInput):
    """Latitude must be in [-90, 90] and longitude in [-180, 180], as finite WGS84 degrees."""

    code = "invalid_coordinates"


class PayloadTooLarge(GeoWebError):
    """The request is larger than this server accepts."""

    status = 413
    code = "payload_too_large"


class NotFound(GeoWebError):
    """Nothing is known by that name."""

    status = 404
    code = "not_found"


class UnknownJurisdiction(NotFound):
    """No jurisdiction has that id."""

    code = "unknown_jurisdiction"

    def __init__(self, jurisdiction: str) -> None:
        super().__init__(f"no jurisdiction has the id {jurisdiction!r}", jurisdiction=jurisdiction)


class BoundaryFileError(InvalidInput):
    """The boundary file cannot be imported; nothing was changed."""

    code = "boundary_file_error"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}", path=path, reason=reason)


class InvalidBoundary(InvalidInput):
    """The boundary is not a usable polygon in WGS84 longitude/latitude."""

    code = "invalid_boundary"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, reason=reason)


class StoreError(GeoWebError):
    """The store cannot be used."""

    code = "store_error"


class RegistryError(GeoWebError):
    """A registry document is malformed."""

    code = "registry_error"


class SnapshotRequired(GeoWebError):
    """The change log no longer reaches back to that serial; take the snapshot at /v1/registry."""

    status = 410
    code = "snapshot_required"


class SyncError(GeoWebError):
    """An upstream registry could not be mirrored; nothing from this batch was applied."""

    status = 502
    code = "sync_error"


class Forbidden(GeoWebError):
    """The caller has not proved control of what it wants to change."""

    status = 403
    code = "forbidden"
