"""Normalizing and checking Open311 URLs and domain names taken from other people's data.

Server lists are written by hand and copied between projects, so their URLs carry small defects:
a missing scheme, a doubled slash, a resource file pasted after the base URL. These functions
repair what can be repaired without guessing and say what they changed, so the caller can keep
the fixes with the data; what cannot be repaired raises :class:`ValueError`.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

#: Files that follow a GeoReport v2 base URL; a base URL itself names the folder that holds them.
_RESOURCE_FILE = re.compile(r"(?:requests|services|discovery)\.(?:json|xml)", re.IGNORECASE)

#: ``scheme:`` at the start of a URL; a digit after the colon is a port (``host:8080/``).
_SCHEME_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?!\d)")

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)

_MAX_HOSTNAME = 253


def is_hostname(name: str) -> bool:
    """Whether ``name`` is a DNS host name usable as a jurisdiction's domain.

    RFC 1123 labels (letters, digits and inner hyphens, 1-63 characters each), at least two
    labels, at most 253 characters, and a top-level label that is not all digits (so an IPv4
    address is not a host name). Underscores are not allowed: ``cityofnewport_news.org`` is an
    identifier, not a domain. One trailing dot (the root) is accepted.
    """
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > _MAX_HOSTNAME:
        return False
    labels = name.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        return False
    return all(_LABEL.fullmatch(label) for label in labels)


def _split_http_url(url: str, fixes: list[str]) -> SplitResult:
    """Parse an http(s) URL, adding ``https://`` to a bare host; refuse anything else."""
    text = url.strip()
    if not text:
        raise ValueError("empty URL")
    if any(c.isspace() for c in text):
        raise ValueError(f"{url!r} is not a URL: it contains whitespace")
    if "://" not in text:
        if text.startswith("//"):
            text = "https:" + text
            fixes.append(f"added the missing scheme: {url!r} has none, https:// assumed")
        elif match := _SCHEME_PREFIX.match(text):
            if match.group().lower() in ("http:", "https:"):
                raise ValueError(f"{url!r} is malformed: its scheme must be followed by '//'")
            raise ValueError(f"{url!r} is not an http(s) URL")
        else:
            text = "https://" + text
            fixes.append(f"added the missing scheme: {url!r} has none, https:// assumed")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http(s) URL (scheme {parts.scheme!r})")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r} carries credentials; an Open311 URL must not")
    netloc = parts.netloc.lower()
    return SplitResult(scheme, netloc, parts.path, parts.query, parts.fragment)


def _collapse_slashes(path: str, fixes: list[str]) -> str:
    collapsed = re.sub(r"/{2,}", "/", path)
    if collapsed != path:
        fixes.append(f"collapsed duplicate slashes in the path {path!r}")
    return collapsed


def normalize_base_url(url: str) -> tuple[str, list[str]]:
    """The normalized GeoReport v2 base URL for ``url``, and the fixes applied, in order.

    Adds ``https://`` to a bare host, lowercases the scheme and host, collapses duplicate
    slashes in the path, strips a resource file a base URL must not end in (``requests.json``,
    ``services.xml``, ``discovery.json`` ...) and ends the path in exactly one slash. Raises
    :class:`ValueError` for an empty URL, one that is not http(s), has no host, carries
    credentials, or has a query or fragment (a base URL is a folder that paths are appended to).
    """
    fixes: list[str] = []
    parts = _split_http_url(url, fixes)
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r} has a query or fragment; a GeoReport base URL cannot")
    path = _collapse_slashes(parts.path, fixes)
    head, _, last = path.rpartition("/")
    if _RESOURCE_FILE.fullmatch(last):
        fixes.append(f"removed the resource file {last!r}: a base URL names the folder above it")
        path = head + "/"
    if not path.endswith("/"):
        fixes.append("added the trailing slash a base URL needs")
    path = path.rstrip("/") + "/"
    return urlunsplit(parts._replace(path=path)), fixes


def normalize_discovery_url(url: str | None) -> tuple[str | None, list[str]]:
    """The normalized service discovery URL, or ``None`` when none is published; and the fixes.

    Adds ``https://`` to a bare host, lowercases the scheme and host and collapses duplicate
    slashes in the path. Raises :class:`ValueError` for a URL that is not http(s) or has no host.
    """
    if url is None or not url.strip():
        return None, ["no discovery URL published"]
    fixes: list[str] = []
    parts = _split_http_url(url, fixes)
    path = _collapse_slashes(parts.path, fixes)
    return urlunsplit(parts._replace(path=path)), fixes
