"""The ``geoweb`` command line. Every option can also be set as ``GEOWEB_<COMMAND>_<OPTION>``."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import IO, Any

import click
import orjson

from common.errors import GeoWebError
from common.models import Answer
from resolver.cli.options import (
    boundary_file_options,
    db_option,
    dns_options,
    dns_registry_options,
    fallback_options,
    fetch_options,
    refresh_concurrency_option,
    refresh_loop_options,
    registry_loop_options,
)
from resolver.config import DEFAULT_PORT, SETTINGS_HELP, Settings
from resolver.core.decide import Resolver, parse_coordinate
from resolver.registry.documents import load_jurisdictions
from resolver.store import Store

#: Columns ``resolve-batch`` appends to every input row.
ANSWER_COLUMNS = (
    "jurisdiction_id",
    "jurisdiction_name",
    "endpoint_url",
    "fallback",
    "reason",
    "concern_status",
    "boundary_generation",
    "error",
)


class GeoWebGroup(click.Group):
    """Turns :class:`GeoWebError` into one clear line on stderr and exit status 2 (bad input)
    or 1 (anything else), instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GeoWebError as error:
            click.echo(f"geoweb: {error.detail}", err=True)
            ctx.exit(2 if 400 <= error.status < 500 else 1)


@click.group(cls=GeoWebGroup, context_settings={"auto_envvar_prefix": "GEOWEB"})
@click.version_option(package_name="geowebdns")
def main() -> None:
    """GeoWeb DNS: which Open311 endpoint is responsible for this spot, for this concern?"""


def _open_resolver(db: str | None, fallback_url: str | None, fallback_name: str) -> Resolver:
    settings = Settings(db=db, fallback_url=fallback_url, fallback_name=fallback_name)
    with Store(settings.db_path) as store:
        jurisdictions, _source = load_jurisdictions(store)
    return Resolver(jurisdictions, fallback=settings.fallback)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help=SETTINGS_HELP["host"])
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=int, help=SETTINGS_HELP["port"]
)
@db_option
@fallback_options
@click.option(
    "--max-batch-points",
    default=Settings.max_batch_points,
    show_default=True,
    type=click.IntRange(1),
    help=SETTINGS_HELP["max_batch_points"],
)
@click.option(
    "--max-body-bytes",
    default=Settings.max_body_bytes,
    show_default=True,
    type=click.IntRange(1024),
    help=SETTINGS_HELP["max_body_bytes"],
)
@click.option("--public-url", metavar="URL", help=SETTINGS_HELP["public_url"])
@click.option(
    "--discovery-refresh/--no-discovery-refresh",
    default=Settings.discovery_refresh,
    show_default=True,
    help=SETTINGS_HELP["discovery_refresh"],
)
@refresh_concurrency_option
@refresh_loop_options
@registry_loop_options
@fetch_options
@dns_options
@dns_registry_options
@click.option(
    "--register-domain", multiple=True, metavar="DOMAIN", help=SETTINGS_HELP["register_domain"]
)
def serve(**options: Any) -> None:
    """Serve the HTTP API (GeoWeb DNS /service and /v1). With an empty store, serves the
    embedded registry."""
    from resolver.http.app import create_app, run_server

    settings = Settings(**options)
    run_server(create_app(settings), settings.host, settings.port)


@main.command()
@click.option("--lat", required=True, help="Latitude, WGS84 decimal degrees.")
@click.option("--long", "long_", required=True, help="Longitude, WGS84 decimal degrees.")
@click.option("--concern", help="A service_code, or words like 'pothole'.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole answer as JSON.")
@db_option
@fallback_options
@dns_options
@dns_registry_options
@fetch_options
def resolve(lat: str, long_: str, concern: str | None, as_json: bool, **options: Any) -> None:
    """Answer one point. Exit status 0 when an endpoint answers, 3 when none does.

    With --dns-nameserver, each candidate's _open311 record is checked (and, with
    --dns-registry-zone, jurisdictions the store lacks are found through DNS); DNS answers are
    cached in the store."""
    point = parse_coordinate(lat, "lat"), parse_coordinate(long_, "long")
    settings = Settings(**options)
    if settings.dns_nameserver:
        import asyncio

        from resolver.cli.dns import resolve_with_dns

        answer = asyncio.run(resolve_with_dns(settings, *point, concern))
    else:
        resolver = _open_resolver(settings.db, settings.fallback_url, settings.fallback_name)
        answer = resolver.resolve(*point, concern)
    if as_json:
        click.echo(orjson.dumps(answer.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(answer.message())
        if answer.endpoint is not None:
            click.echo(f"endpoint: {answer.endpoint.url}")
        if answer.jurisdiction is not None:
            click.echo(f"jurisdiction: {answer.jurisdiction.id} ({answer.jurisdiction.name})")
    if not answer.found:
        sys.exit(3)


@main.command("resolve-batch")
@click.argument(
    "input_file", metavar="[INPUT]", type=click.File("r", encoding="utf-8-sig"), default="-"
)
@click.argument(
    "output_file", metavar="[OUTPUT]", type=click.File("w", encoding="utf-8"), default="-"
)
@click.option(
    "--chunk-size",
    default=10_000,
    show_default=True,
    type=click.IntRange(1),
    help="Rows resolved at a time.",
)
@db_option
@fallback_options
def resolve_batch(
    input_file: IO[str],
    output_file: IO[str],
    chunk_size: int,
    db: str | None,
    fallback_url: str | None,
    fallback_name: str,
) -> None:
    """Answer a CSV of points: columns lat,long[,concern] in (a header row is required), the same
    rows out with the answer columns appended. A bad row gets an error column, never dropped.

    \b
    Appended columns: jurisdiction_id, jurisdiction_name, endpoint_url, fallback, reason,
    concern_status, boundary_generation, error.
    """
    resolver = _open_resolver(db, fallback_url, fallback_name)
    reader = csv.reader(input_file)
    header = next(reader, None)
    if header is None:
        raise click.UsageError("the input is empty; it needs a header row with lat,long[,concern]")
    columns = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [c for c in ("lat", "long") if c not in columns]
    if missing:
        raise click.UsageError(
            f"the header row has no {' or '.join(missing)} column (found: {', '.join(header)})"
        )
    writer = csv.writer(output_file, lineterminator="\n")
    writer.writerow([*header, *ANSWER_COLUMNS])
    lat_col, long_col, concern_col = columns["lat"], columns["long"], columns.get("concern")
    width = len(header)

    def read_point(row: list[str]) -> tuple[float, float, str | None]:
        return (
            parse_coordinate(_cell(row, lat_col), "lat"),
            parse_coordinate(_cell(row, long_col), "long"),
            _cell(row, concern_col) if concern_col is not None else None,
        )

    for rows in _chunks(reader, chunk_size):
        for row, answer in zip(rows, resolver.resolve_rows(rows, read_point), strict=True):
            padded = row + [""] * (width - len(row))  # short rows keep their place in the columns
            writer.writerow([*padded, *_answer_cells(answer)])


def _cell(row: list[str], column: int) -> str:
    return row[column] if column < len(row) else ""


def _chunks(rows: Iterator[list[str]], size: int) -> Iterator[list[list[str]]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def _answer_cells(answer: Answer | GeoWebError) -> list[str]:
    if isinstance(answer, GeoWebError):
        return ["", "", "", "", "", "", "", answer.detail]
    jurisdiction = answer.jurisdiction
    return [
        jurisdiction.id if jurisdiction else "",
        jurisdiction.name if jurisdiction else "",
        answer.endpoint.url if answer.endpoint else "",
        "true" if answer.is_fallback else "false",
        answer.reason or "",
        answer.concern_status,
        jurisdiction.boundary_generation or "" if jurisdiction else "",
        "",
    ]


@main.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--id-field", required=True, help="Attribute holding each feature's unique id.")
@click.option("--name-field", required=True, help="Attribute holding each feature's name.")
@boundary_file_options
@click.option("--domain", help="The jurisdiction's own DNS domain (for every feature).")
@click.option("--jurisdiction-id", help="The Open311 jurisdiction_id its server expects.")
@click.option("--discovery-url", metavar="URL", help="Its Open311 service discovery document.")
@click.option("--endpoint-url", metavar="URL", help="Its GeoReport v2 base URL.")
@click.option("--replace", is_flag=True, help="Overwrite jurisdictions with the same ids.")
@db_option
def import_(file: Path, db: str | None, **options: Any) -> None:
    """Import jurisdictions from a boundary file (GeoJSON, Shapefile, GeoPackage; any CRS).

    One transaction: if anything is wrong, nothing is imported. Invalid polygons are repaired
    and reported; features with no geometry are kept (listed, not found by location).
    """
    from tqdm import tqdm

    from boundaries.reader import count_features
    from resolver.registry.importing import ImportOptions, import_boundary_file

    settings = Settings(db=db)
    import_options = ImportOptions(**options)
    with Store(settings.db_path) as store:
        total = count_features(file, layer=import_options.layer) if file.exists() else None
        with tqdm(
            total=total, unit=" features", desc=file.name, file=sys.stderr, disable=None
        ) as bar:
            summary = import_boundary_file(store, file, import_options, progress=bar.update)
    click.echo(f"imported {summary.imported} jurisdictions from {file} into {settings.db_path}")
    for label, items in (
        ("repaired", summary.repaired),
        ("without geometry", summary.without_geometry),
    ):
        if items:
            click.echo(f"{len(items)} {label}:")
            for jurisdiction_id, note in items:
                click.echo(f"  {jurisdiction_id}: {note}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@db_option
def jurisdictions(as_json: bool, db: str | None) -> None:
    """List the jurisdictions served (the store's, or the embedded registry when it is empty)."""
    settings = Settings(db=db)
    with Store(settings.db_path) as store:
        items, source = load_jurisdictions(store)
    if as_json:
        body = {"source": source, "jurisdictions": [j.to_dict() for j in items]}
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"# {len(items)} jurisdictions from the {source} registry")
    for j in items:
        endpoint = j.endpoint.url if j.endpoint else "-"
        boundary = "boundary" if j.boundary is not None else "no-boundary"
        click.echo(f"{j.id}\t{j.name}\t{boundary}\t{endpoint}")


from resolver.cli.discovery import register_commands  # noqa: E402  (issue 4: discovery, refresh)

register_commands(main)

from resolver.cli.dns import register_commands as register_dns  # noqa: E402  (issue 3: zone, publish)

register_dns(main)

from resolver.cli.federation import register_commands as register_federation  # noqa: E402  (issue 5)

register_federation(main)

from resolver.cli.jurisdiction import register_commands as register_jurisdiction  # noqa: E402  (issue 5)

register_jurisdiction(main)
