"""``geoweb jurisdiction publish`` and ``geoweb jurisdiction withdraw``: what a jurisdiction hosts
itself (its boundary, a discovery document with ``service_area``, the ``_open311`` record), and
registering with a registry after proving control of its domain (docs/registry.md,
"Registration")."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
import click
import shapely.geometry

from boundaries.reader import count_features, read_boundaries
from common.errors import BoundaryFileError, GeoWebError, InvalidInput
from common.models import Endpoint, Jurisdiction
from discovery.dns_publish import Change, Plan, Publisher, TsigKey, read_key_file
from discovery.dns_records import (
    Open311Record,
    UrlPolicy,
    parse_record,
    record_name,
    txt_zone_text,
)
from discovery.generate import to_json
from discovery.urls import normalize_base_url, normalize_discovery_url
from resolver.cli.discovery import published_document
from resolver.cli.options import boundary_file_options
from resolver.core.federation import timestamp
from resolver.registry.documents import jurisdiction_to_feature
from resolver.registry.registration import (
    DnsCheckFailed,
    check_jurisdiction_id,
    normalize_domain,
    published_digests,
)

F = TypeVar("F", bound=Callable[..., Any])

#: The most of a registry's answer read; its answers are small JSON documents.
MAX_RESPONSE_BYTES = 1024 * 1024


class RegistryRefused(GeoWebError):
    """The registry refused the request (its answer says why)."""

    status = 400
    code = "registry_refused"


class RegistryUnavailable(GeoWebError):
    """The registry could not be reached or did not answer usefully."""

    status = 502
    code = "registry_unavailable"


class ChallengeNotSeen(GeoWebError):
    """The challenge record did not appear in DNS in time."""

    status = 504
    code = "challenge_not_seen"


@dataclass(frozen=True)
class ChallengeSetup:
    """How the challenge record gets published and how its appearance is watched."""

    update_server: tuple[str, int] | None
    update_zone: str | None
    tsig_key: Any  # discovery.dns_publish.TsigKey | None (imported when used)
    nameservers: tuple[str, ...]
    dns_port: int
    wait: float
    poll_interval: float
    timeout: float


def challenge_options(f: F) -> F:
    """How the challenge TXT record is published and waited for (``publish``, ``withdraw``)."""
    for decorator in reversed(
        [
            click.option(
                "--update-server",
                metavar="HOST[:PORT]",
                help="Publish the challenge record by RFC 2136 UPDATE at this primary server "
                "(TCP, port 53 unless given), and remove it afterwards. Without it the record "
                "is printed for you to publish.",
            ),
            click.option(
                "--update-zone",
                metavar="ZONE",
                help="The zone to update (default: the domain itself).",
            ),
            click.option(
                "--tsig-key",
                metavar="NAME:ALGORITHM:SECRET",
                help="TSIG key signing the UPDATE, e.g. city-key:hmac-sha256:BASE64SECRET.",
            ),
            click.option(
                "--tsig-key-file",
                type=click.Path(dir_okay=False),
                help="TSIG key file instead (BIND tsig-keygen or Knot keymgr format).",
            ),
            click.option(
                "--dns-nameserver",
                multiple=True,
                metavar="IP",
                help="Nameserver asked while waiting for the challenge record; repeatable. "
                "Default: the system's resolver.",
            ),
            click.option(
                "--dns-port",
                default=53,
                show_default=True,
                type=click.IntRange(1, 65535),
                help="Port of those nameservers.",
            ),
            click.option(
                "--wait",
                default=600.0,
                show_default=True,
                type=click.FloatRange(0),
                help="Most seconds to wait for the challenge record to appear in DNS.",
            ),
            click.option(
                "--poll-interval",
                default=5.0,
                show_default=True,
                type=click.FloatRange(0.05, 3600),
                help="Seconds between DNS checks while waiting.",
            ),
            click.option(
                "--timeout",
                default=30.0,
                show_default=True,
                type=click.FloatRange(0.1, 600),
                help="Seconds for each request to the registry, the update server and DNS.",
            ),
        ]
    ):
        f = decorator(f)
    return f


def _setup(
    registry: str | None,
    update_server: str | None,
    update_zone: str | None,
    tsig_key: str | None,
    tsig_key_file: str | None,
    dns_nameserver: tuple[str, ...],
    dns_port: int,
    wait: float,
    poll_interval: float,
    timeout: float,
) -> ChallengeSetup:

    if registry is None and (update_server or update_zone or tsig_key or tsig_key_file):
        raise click.UsageError("--update-server, --update-zone and the TSIG key need --registry")
    if (tsig_key or tsig_key_file or update_zone) and not update_server:
        raise click.UsageError("--update-zone and the TSIG key are for --update-server")
    if tsig_key and tsig_key_file:
        raise click.UsageError("give --tsig-key or --tsig-key-file, not both")
    key = None
    if tsig_key:
        parts = tsig_key.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise click.BadParameter("use NAME:ALGORITHM:SECRET", param_hint="--tsig-key")
        key = TsigKey(parts[0], parts[2], parts[1])
    elif tsig_key_file:
        key = read_key_file(tsig_key_file)
    return ChallengeSetup(
        update_server=_host_port(update_server) if update_server else None,
        update_zone=update_zone,
        tsig_key=key,
        nameservers=dns_nameserver,
        dns_port=dns_port,
        wait=wait,
        poll_interval=poll_interval,
        timeout=timeout,
    )


def _host_port(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT``."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise click.BadParameter(f"{text!r} is not HOST[:PORT]", param_hint="--update-server")
    return host, int(port)


def _registry_base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--registry")
    return url.rstrip("/").removesuffix("/v1/registry").rstrip("/")


@click.group()
def jurisdiction() -> None:
    """A jurisdiction's own publishing: the files it hosts, its _open311 record, and
    registration with a registry by proving control of its domain."""


@jurisdiction.command()
@click.argument("boundary_file", type=click.Path(path_type=Path))
@click.option(
    "--id",
    "jurisdiction_key",
    required=True,
    metavar="ID",
    help="Registry id of the jurisdiction: letters, digits, '.', '_', ':' or '-'.",
)
@click.option("--name", required=True, help="Its display name.")
@click.option(
    "--domain", required=True, help="Its own DNS domain; the records go under it (city.example)."
)
@click.option(
    "--discovery-url",
    required=True,
    metavar="URL",
    help="Where it will serve discovery.json (https).",
)
@click.option(
    "--endpoint-url", required=True, metavar="URL", help="Its GeoReport v2 base URL (https)."
)
@click.option("--contact", required=True, help="For the discovery document: how to reach you.")
@click.option(
    "--key-service", required=True, help="For the discovery document: how to get an API key."
)
@click.option(
    "--boundary-url",
    metavar="URL",
    help="Where it will serve boundary.geojson (the b= key; https). Default: beside the "
    "discovery document.",
)
@click.option("--jurisdiction-id", help="The Open311 jurisdiction_id its endpoint expects.")
@click.option(
    "--feature",
    metavar="FIELD=VALUE",
    help="The feature to use when the file holds several, e.g. GEOID=0667000.",
)
@boundary_file_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to write boundary.geojson and discovery.json into.",
)
@click.option(
    "--ttl",
    default=300,
    show_default=True,
    type=click.IntRange(0, 2**31 - 1),
    help="TTL of the _open311 record printed.",
)
@click.option(
    "--expires",
    metavar="TIME",
    help="When registries stop serving the entry (ISO 8601; UTC unless it says). Default: never.",
)
@click.option(
    "--registry",
    metavar="URL",
    help="Also register with the registry at this URL (e.g. https://registry.example).",
)
@challenge_options
def publish(
    boundary_file: Path,
    jurisdiction_key: str,
    name: str,
    domain: str,
    discovery_url: str,
    endpoint_url: str,
    contact: str,
    key_service: str,
    boundary_url: str | None,
    jurisdiction_id: str | None,
    feature: str | None,
    layer: str | None,
    assume_crs: str | None,
    out_dir: Path,
    ttl: int,
    expires: str | None,
    registry: str | None,
    **challenge: Any,
) -> None:
    """Write what a jurisdiction hosts (boundary.geojson with its generation, discovery.json
    with a service_area) and print its _open311 TXT record. With --registry, also register it:
    request a challenge, publish the challenge record (by UPDATE with --update-server, or by
    hand: it is printed), wait until DNS shows it, then send the entry.

    The boundary is read like geoweb import reads it (any CRS to WGS84, repaired, with a note
    per repair). A file with several features needs --feature; a single feature needs at least
    one attribute."""

    domain = normalize_domain(domain)
    check_jurisdiction_id(jurisdiction_key)
    setup = _setup(registry, **challenge)
    base = _registry_base(registry) if registry else None
    expiry = _expiry(expires) if expires else None
    try:
        discovery, _fixes = normalize_discovery_url(discovery_url)
        endpoint, _fixes = normalize_base_url(endpoint_url)
        boundary_at, _fixes = normalize_discovery_url(
            boundary_url or urljoin(discovery or "", "boundary.geojson")
        )
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    assert discovery is not None and boundary_at is not None
    for option, url in (
        ("--discovery-url", discovery),
        ("--endpoint-url", endpoint),
        ("--boundary-url", boundary_at),
    ):
        if urlsplit(url).scheme != "https":
            raise click.BadParameter(f"{url!r} is not an https URL", param_hint=option)
    chosen = _read_boundary(boundary_file, feature, layer, assume_crs)
    if chosen.geometry is None:
        raise InvalidInput(f"{boundary_file}: no usable boundary: {'; '.join(chosen.notes)}")
    entry = Jurisdiction(
        id=jurisdiction_key,
        name=name,
        domain=domain,
        jurisdiction_id=jurisdiction_id,
        discovery_url=discovery,
        endpoints=(Endpoint(endpoint),),
        notes=chosen.notes,
    ).with_boundary(chosen.geometry)
    record = Open311Record(
        discovery_url=discovery,
        endpoint_url=endpoint,
        jurisdiction_id=jurisdiction_id,
        name=name,
        boundary_url=boundary_at,
        boundary_generation=entry.boundary_generation,
    )
    parse_record(record.strings(), name=record_name(domain), policy=UrlPolicy())  # https only
    document = published_document(entry, contact, key_service)
    geometry = shapely.geometry.mapping(chosen.geometry)
    document["service_area"] = geometry
    boundary = {
        "type": "Feature",
        "id": entry.id,
        "geometry": geometry,
        "properties": {
            "id": entry.id,
            "name": entry.name,
            "domain": domain,
            "boundary_generation": entry.boundary_generation,
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "boundary.geojson").write_text(json.dumps(boundary) + "\n", encoding="utf-8")
    (out_dir / "discovery.json").write_text(to_json(document), encoding="utf-8")
    click.echo(
        f"wrote {out_dir / 'boundary.geojson'} (generation {entry.boundary_generation}) and "
        f"{out_dir / 'discovery.json'} (with service_area)"
    )
    for note in chosen.notes:
        click.echo(f"boundary: {note}")
    click.echo(f"serve them at {boundary_at} and {discovery}")
    click.echo(f"publish this record under {domain}:")
    click.echo(f"{record_name(domain)} {ttl} IN TXT {txt_zone_text(record.strings())}")
    if base is None:
        return
    feature_document = jurisdiction_to_feature(entry)
    if expiry is not None:
        feature_document["properties"]["entry"] = {"expires": expiry}
    result = asyncio.run(_register(base, domain, feature_document, setup))
    saved = result.get("jurisdiction") or {}
    meta = saved.get("entry") or {}
    click.echo(
        f"registered {result.get('registered')} for {domain} at {base}: version "
        f"{meta.get('version')}, origin {meta.get('origin')}, "
        f"{'attested' if meta.get('attested') else 'not attested'}"
        f"{', replacing the earlier entry' if result.get('replaced') else ''}; "
        f"{base}{result.get('href', '')}"
    )
    for note in result.get("notes") or ():
        click.echo(f"registry: {note}")


@jurisdiction.command()
@click.argument("jurisdiction_key", metavar="ID")
@click.option("--domain", required=True, help="The domain whose entry it is.")
@click.option("--registry", required=True, metavar="URL", help="The registry to withdraw it from.")
@challenge_options
def withdraw(jurisdiction_key: str, domain: str, registry: str, **challenge: Any) -> None:
    """Withdraw the domain's own entry from a registry: the same proof of control as publish
    (a challenge record under the domain), then the deletion, which reaches its mirrors."""

    domain = normalize_domain(domain)
    check_jurisdiction_id(jurisdiction_key)
    setup = _setup(registry, **challenge)
    base = _registry_base(registry)
    result = asyncio.run(_withdraw(base, domain, jurisdiction_key, setup))
    click.echo(f"withdrew {result.get('deleted')} for {domain} from {base}")


def _expiry(text: str) -> str:

    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        message = f"{text!r} is not an ISO 8601 time"
        raise click.BadParameter(message, param_hint="--expires") from None
    return timestamp(when if when.tzinfo else when.replace(tzinfo=dt.UTC))


def _read_boundary(path: Path, feature: str | None, layer: str | None, crs: str | None) -> Any:
    """The one boundary feature meant (a ``BoundaryFeature``), read and repaired by
    ``boundaries.reader``."""

    if feature is not None:
        field, sep, value = feature.partition("=")
        if not sep or not field:
            raise click.BadParameter("use FIELD=VALUE", param_hint="--feature")
    else:
        count = count_features(path, layer=layer)
        if count != 1:
            raise BoundaryFileError(
                str(path), f"it holds {count} features; choose one with --feature FIELD=VALUE"
            )
        field, value = _some_attribute(path, layer), None
    report = read_boundaries(path, id_field=field, name_field=field, layer=layer, assume_crs=crs)
    chosen = [f for f in report.features if value is None or f.id == value]
    if not chosen:
        shown = ", ".join(f.id for f in report.features[:5])
        raise BoundaryFileError(str(path), f"no feature has {field}={value!r} (some: {shown})")
    return chosen[0]


def _some_attribute(path: Path, layer: str | None) -> str:
    """An attribute with a value in a one-feature file: the reader names features by one."""
    import fiona  # GDAL: imported when a file is read, not by every command

    try:
        with fiona.open(path, layer=layer) as source:
            properties = dict(next(iter(source)).properties)
    except (fiona.errors.FionaError, OSError, ValueError, StopIteration) as exc:
        raise BoundaryFileError(str(path), f"cannot read its feature: {exc}") from None
    for key, value in properties.items():
        if value is not None and str(value).strip():
            return str(key)
    raise BoundaryFileError(
        str(path),
        'its feature has no attribute with a value; give it one (e.g. "properties": '
        '{"name": "City of Example"}) or choose a feature with --feature FIELD=VALUE',
    )


# -- talking to the registry and to DNS -------------------------------------------------------


async def _register(
    base: str, domain: str, feature: dict[str, Any], setup: ChallengeSetup
) -> dict[str, Any]:

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=setup.timeout)) as http:
        challenge = await _request(
            http,
            "POST",
            f"{base}/v1/registry/challenges",
            {"domain": domain, "jurisdiction": feature["properties"]["id"]},
        )
        async with _challenge_record(challenge, setup):
            await _wait_for(challenge, setup)
            return await _request(
                http,
                "POST",
                f"{base}/v1/registry/jurisdictions",
                {"token": challenge["token"], "domain": domain, "feature": feature},
            )


async def _withdraw(
    base: str, domain: str, jurisdiction_key: str, setup: ChallengeSetup
) -> dict[str, Any]:

    target = f"{base}/v1/registry/jurisdictions/{quote(jurisdiction_key, safe='')}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=setup.timeout)) as http:
        challenge = await _request(
            http,
            "POST",
            f"{base}/v1/registry/challenges",
            {"domain": domain, "jurisdiction": jurisdiction_key},
        )
        async with _challenge_record(challenge, setup):
            await _wait_for(challenge, setup)
            return await _request(
                http, "DELETE", target, {"token": challenge["token"], "domain": domain}
            )


async def _request(http: Any, method: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """One JSON request to the registry; its refusal or failure as a clear error."""

    try:
        async with http.request(method, url, json=body) as response:
            raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        raise RegistryUnavailable(f"cannot reach the registry at {url}: {why}") from None
    try:
        answer = json.loads(raw) if len(raw) <= MAX_RESPONSE_BYTES else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise RegistryUnavailable(f"{method} {url} answered {status} without a JSON object")
    if status >= 400:
        detail = answer.get("detail") or "no detail given"
        error = RegistryUnavailable if status >= 500 else RegistryRefused
        raise error(f"the registry refused ({status} {answer.get('error')}): {detail}")
    return answer


@asynccontextmanager
async def _challenge_record(
    challenge: dict[str, Any], setup: ChallengeSetup
) -> AsyncIterator[None]:
    """The challenge record, published by UPDATE (and removed afterwards) or by hand."""
    record = challenge["record"]
    if setup.update_server is None:
        click.echo(f"publish this challenge record under {challenge['domain']}:")
        click.echo(challenge["zone_line"])
        click.echo(f"(the token expires at {challenge['expires']})")
        yield
        click.echo(f"the challenge record {record['name']} can be removed now")
        return

    host, port = setup.update_server
    zone = setup.update_zone or challenge["domain"]
    publisher = Publisher(host, zone, setup.tsig_key, port=port, timeout=setup.timeout)
    text = f'"{record["value"]}"'
    add = Change("add", record["name"], "TXT", int(record["ttl"]), text)
    await asyncio.to_thread(publisher.send, Plan(publisher.zone, None, [add]))
    click.echo(f"published {record['name']} TXT {text} at {host} port {port}")
    try:
        yield
    finally:
        remove = Change("delete", record["name"], "TXT", int(record["ttl"]), text)
        try:
            await asyncio.to_thread(publisher.send, Plan(publisher.zone, None, [remove]))
        except GeoWebError as error:
            click.echo(f"could not remove the challenge record: {error.detail}", err=True)


async def _wait_for(challenge: dict[str, Any], setup: ChallengeSetup) -> None:
    """Until DNS shows the challenge digest (the registry asks the same question)."""

    loop = asyncio.get_running_loop()
    deadline = loop.time() + setup.wait
    digest, name = challenge["record"]["value"], challenge["record"]["name"]
    where = ", ".join(setup.nameservers) or "the system resolver"
    said = "it is not there yet"
    while True:
        try:
            values = await published_digests(
                challenge["domain"],
                nameservers=setup.nameservers,
                port=setup.dns_port,
                timeout=min(setup.timeout, 5.0),
            )
        except DnsCheckFailed as error:
            said = error.detail
        else:
            if digest in values:
                click.echo(f"{name} is visible at {where}; registering")
                return
            said = f"{len(values)} other value(s)" if values else "no record yet"
        if loop.time() + setup.poll_interval > deadline:
            raise ChallengeNotSeen(
                f"{name} did not show the challenge at {where} within {setup.wait:g} s "
                f"({said}); nothing was registered"
            )
        await asyncio.sleep(setup.poll_interval)


def register_commands(main: click.Group) -> None:
    """Add ``jurisdiction`` (``publish``, ``withdraw``) to the ``geoweb`` command."""
    main.add_command(jurisdiction)


__all__ = ["jurisdiction", "publish", "register_commands", "withdraw"]
