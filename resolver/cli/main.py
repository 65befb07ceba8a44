"""The ``geoweb`` command line. Every option can also be set as ``GEOWEB_<COMMAND>_<OPTION>``."""

from __future__ import annotations

import asyncio
import csv
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import IO, Any

import click
import orjson
from tqdm import tqdm

from boundaries.reader import count_features
from common.errors import GeoWebError, InvalidInput
from common.models import Answer
from resolver.cli import adhoc as cli_adhoc
from resolver.cli import discovery as cli_discovery
from resolver.cli import dns as cli_dns
from resolver.cli import federation as cli_federation
from resolver.cli import jurisdiction as cli_jurisdiction
from resolver.cli import report as cli_report
from resolver.cli.options import (
    CONTEXT_SETTINGS,
    boundary_file_options,
    db_option,
    dns_options,
    dns_registry_options,
    embedded_option,
    fallback_options,
    fetch_options,
    setting_options,
)
from resolver.cli.output import plural
from resolver.config import SETTINGS_BY_NAME, Settings
from resolver.core.decide import parse_coordinate
from resolver.http.workers import serve as serve_workers
from resolver.registry.documents import load_jurisdictions
from resolver.registry.embedded import describe_layers, layers, open_store
from resolver.registry.importing import ImportOptions, import_boundary_file
from resolver.runtime import Runtime
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


@click.group(cls=GeoWebGroup, context_settings={"auto_envvar_prefix": "GEOWEB", **CONTEXT_SETTINGS})
@click.version_option(package_name="geowebdns")
def main() -> None:
    """GeoWeb DNS: which Open311 endpoint is responsible for this spot, for this concern?"""


async def answer_point(settings: Settings, lat: float, long: float, concern: str | None) -> Answer:
    """One answer, by the runtime ``geoweb serve`` uses: the store's registry (with the embedded
    layer unless left out), with DNS attestation and the DNS registry zone when configured
    (their answers cached in the store, as the server caches them)."""
    async with Runtime.open(settings) as runtime:
        return await runtime.answerer.answer(lat, long, concern)


@main.command()
@setting_options(*SETTINGS_BY_NAME)
def serve(**options: Any) -> None:
    """Serve the HTTP API (GeoWeb DNS /service and /v1). The embedded registry is the store's
    base layer; the store's own entries add to it and override it (--no-embedded: left out).
    With --workers N, N processes answer on the one port, sharing the index built once."""
    settings = Settings(**options)
    serve_workers(settings)


@main.command()
@click.option("--lat", required=True, help="Latitude, WGS84 decimal degrees.")
@click.option("--long", "long_", required=True, help="Longitude, WGS84 decimal degrees.")
@click.option("--concern", help="A service_code, or words like 'pothole'.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole answer as JSON.")
@db_option
@embedded_option
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
    # Answered here, not by a server: there is no ad hoc service of ours to send to.
    settings = Settings(**options, adhoc=False)
    answer = asyncio.run(answer_point(settings, *point, concern))
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
    "input_file",
    metavar="[INPUT]",
    # Bytes that are not UTF-8 are kept (as surrogates) so the row they are in can be named.
    type=click.File("r", encoding="utf-8-sig", errors="surrogateescape"),
    default="-",
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
@embedded_option
@fallback_options
def resolve_batch(
    input_file: IO[str], output_file: IO[str], chunk_size: int, **options: Any
) -> None:
    """Answer a CSV of points: columns lat,long[,concern] in (a header row is required), the same
    rows out with the answer columns appended. A bad row gets an error column, never dropped.

    \b
    Appended columns: jurisdiction_id, jurisdiction_name, endpoint_url, fallback, reason,
    concern_status, boundary_generation, error.
    """
    # Answered here, not by a server: there is no ad hoc service of ours to send to.
    settings = Settings(**options, adhoc=False)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_FIELD))
    reader = csv.reader(input_file)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise InvalidInput(f"the header row cannot be read as CSV: {error}") from None
    if header is not None:
        header, _ = _utf8(header)
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

    async def answer_all() -> None:
        async with Runtime.open(settings) as runtime:
            for chunk in _chunks(reader, chunk_size):
                checked = [_utf8(row) for row in chunk]
                rows = [row for row, _ok in checked]
                answers = runtime.answerer.answer_rows(rows, read_point)
                for (row, ok), answer in zip(checked, answers, strict=True):
                    padded = row + [""] * (width - len(row))  # short rows keep their columns
                    writer.writerow([*padded, *_answer_cells(answer if ok else _NOT_UTF8)])

    try:
        asyncio.run(answer_all())
    except csv.Error as error:  # a field beyond MAX_CSV_FIELD, a NUL: the rows before are out
        raise InvalidInput(f"line {reader.line_num} of the input: {error}") from None


#: Longest CSV field read (characters); a longer one stops the batch with the line it is on. A
#: row with a long field is still answered (its point is read from its own columns).
MAX_CSV_FIELD = 16 * 1024 * 1024

_NOT_UTF8 = InvalidInput("the row is not valid UTF-8 (its bad bytes are shown as U+FFFD)")


def _utf8(row: list[str]) -> tuple[list[str], bool]:
    """The row, and whether it was valid UTF-8; its undecodable bytes become U+FFFD."""
    try:
        "".join(row).encode("utf-8")
    except UnicodeEncodeError:
        cells = [c.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for c in row]
        return cells, False
    return row, True


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
@click.option("--domain-field", metavar="F", help="Attribute holding each feature's domain.")
@click.option("--jurisdiction-id", help="The Open311 jurisdiction_id its server expects.")
@click.option(
    "--jurisdiction-id-field", metavar="F", help="Attribute holding each feature's jurisdiction_id."
)
@click.option("--discovery-url", metavar="URL", help="Its Open311 service discovery document.")
@click.option(
    "--discovery-url-field", metavar="F", help="Attribute holding each feature's discovery URL."
)
@click.option("--endpoint-url", metavar="URL", help="Its GeoReport v2 base URL.")
@click.option(
    "--endpoint-url-field", metavar="F", help="Attribute holding each feature's GeoReport v2 URL."
)
@click.option("--replace", is_flag=True, help="Overwrite jurisdictions with the same ids.")
@click.option(
    "--allow-missing-geometry",
    is_flag=True,
    help="With --replace: let a feature without geometry replace a stored boundary (lost).",
)
@db_option
def import_(file: Path, db: str | None, **options: Any) -> None:
    """Import jurisdictions from a boundary file (GeoJSON, Shapefile, GeoPackage; any CRS).

    One transaction: if anything is wrong, nothing is imported. Invalid polygons are repaired
    and reported; features with no geometry are kept (listed, not found by location). Each of
    --domain, --jurisdiction-id, --discovery-url and --endpoint-url applies to every feature;
    its -field form reads each feature's own value from an attribute (empty: none).
    """

    settings = Settings(db=db)
    import_options = ImportOptions(**options)
    with Store(settings.db_path) as store:
        total = count_features(file, layer=import_options.layer) if file.exists() else None
        with tqdm(
            total=total, unit=" features", desc=file.name, file=sys.stderr, disable=None
        ) as bar:
            summary = import_boundary_file(store, file, import_options, progress=bar.update)
    click.echo(
        f"imported {plural(summary.imported, 'jurisdiction')} from {file} into {settings.db_path}"
    )
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
@embedded_option
def jurisdictions(as_json: bool, db: str | None, embedded: bool) -> None:
    """List the jurisdictions served, with how many come from each layer (the embedded registry,
    local entries, registrations, mirrors)."""
    settings = Settings(db=db, embedded=embedded)
    with open_store(settings) as store:
        items, source = load_jurisdictions(store)
        served = layers(items, store.registry_id)
    if as_json:
        body = {"source": source, "layers": served, "jurisdictions": [j.to_dict() for j in items]}
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"# {plural(len(items), 'jurisdiction')}: {describe_layers(served)}")
    for j in items:
        endpoint = j.endpoint.url if j.endpoint else "-"
        boundary = "boundary" if j.boundary is not None else "no-boundary"
        click.echo(f"{j.id}\t{j.name}\t{boundary}\t{endpoint}")


for register_commands in (
    cli_adhoc.register_commands,
    cli_discovery.register_commands,
    cli_dns.register_commands,
    cli_federation.register_commands,
    cli_jurisdiction.register_commands,
    cli_report.register_commands,
):
    register_commands(main)
