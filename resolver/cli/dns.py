"""``geoweb zone export`` and ``geoweb publish``: the registry as DNS (``docs/dns-records.md``)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import click

from boundaries.cells import CellScheme
from common.errors import InvalidInput
from discovery.dns_publish import Publisher, TsigKey, read_key_file
from discovery.urls import is_hostname
from discovery.zone import DEFAULT_MAX_CELLS, ZoneOptions, write_zone
from resolver.cli.options import db_option, embedded_option
from resolver.cli.output import plural
from resolver.config import Settings
from resolver.registry.documents import load_jurisdictions
from resolver.registry.embedded import open_store

F = TypeVar("F", bound=Callable[..., Any])


def zone_content_options(f: F) -> F:
    """What the registry's records look like: shared by ``zone export`` and ``publish``."""
    for decorator in reversed(
        [
            db_option,
            embedded_option,
            click.option(
                "--ttl",
                default=300,
                show_default=True,
                type=click.IntRange(0, 2**31 - 1),
                help="TTL of every record, and the negative TTL (SOA minimum), in seconds.",
            ),
            click.option(
                "--boundary-url",
                metavar="TEMPLATE",
                help="Where each boundary is published, with {id} and {domain}, e.g. "
                "https://registry.example/v1/jurisdictions/{id}.geojson (the b= key).",
            ),
            click.option(
                "--cell-depth",
                default=CellScheme().max_depth,
                show_default=True,
                type=click.IntRange(1, 12),
                help="Deepest geohash level (one DNS label each).",
            ),
            click.option(
                "--split-above",
                default=CellScheme().split_above,
                show_default=True,
                type=click.IntRange(1),
                help="Split a cell touched by more jurisdictions than this.",
            ),
        ]
    ):
        f = decorator(f)
    return f


def _options(
    origin: str, ttl: int, boundary_url: str | None, cell_depth: int, split_above: int, **extra: Any
) -> ZoneOptions:
    scheme = CellScheme(max_depth=cell_depth, split_above=split_above, min_depth=min(2, cell_depth))
    return ZoneOptions(origin=origin, ttl=ttl, boundary_url=boundary_url, scheme=scheme, **extra)


def _jurisdictions(db: str | None, embedded: bool) -> list[Any]:
    settings = Settings(db=db, embedded=embedded)
    with open_store(settings) as store:
        jurisdictions, _source = load_jurisdictions(store)
    return jurisdictions


#: How many skipped entries zone export names one by one; beyond, it gives their count.
SKIPPED_LISTED = 50


@click.group()
def zone() -> None:
    """The registry as a DNS zone."""


@zone.command("export")
@click.option("--origin", required=True, metavar="ZONE", help="The zone's name (its origin).")
@zone_content_options
@click.option(
    "--nameserver",
    "nameservers",
    multiple=True,
    metavar="NAME",
    help="A nameserver of the zone (an NS record); repeatable. The first is the SOA's primary. "
    "Default: ns.<origin>.",
)
@click.option(
    "--nameserver-address",
    "nameserver_addresses",
    multiple=True,
    metavar="[NAME=]IP",
    help="The address (A or AAAA glue) of a --nameserver inside the zone, as NAME=IP; a bare IP "
    "belongs to the only nameserver inside the zone; repeatable. Every nameserver inside the "
    "zone needs one, or the zone is refused (it would not load).",
)
@click.option(
    "--max-cells",
    default=DEFAULT_MAX_CELLS,
    show_default=True,
    type=click.IntRange(1),
    help="Refuse a zone with more cells than this (nothing is written).",
)
def export(
    origin: str,
    db: str | None,
    embedded: bool,
    max_cells: int,
    nameservers: tuple[str, ...],
    nameserver_addresses: tuple[str, ...],
    **content: Any,
) -> None:
    """Write the registry as an RFC 1035 master file to standard output: the _open311 TXT
    records of its jurisdictions and the PTR records of its geographic cells."""
    options = _options(
        origin,
        max_cells=max_cells,
        nameservers=nameservers,
        nameserver_addresses=nameserver_addresses,
        **content,
    )
    jurisdictions = _jurisdictions(db, embedded)
    ready = sum(
        1
        for j in jurisdictions
        if j.domain
        and is_hostname(j.domain.strip(".").lower())
        and (j.discovery_url or "").startswith("https://")
    )
    click.echo(
        "; a jurisdiction is published when it has a domain (a DNS host name) and an https "
        f"discovery URL (the d= key): {ready} of {plural(len(jurisdictions), 'jurisdiction')} "
        "have both",
        err=True,
    )
    summary = write_zone(sys.stdout, jurisdictions, options)
    click.echo(
        f"; {plural(summary.records, 'record')}: {summary.txt_records} _open311 TXT, "
        f"{summary.ptr_records} PTR in {plural(summary.cells, 'cell')}; "
        f"{len(summary.skipped)} skipped",
        err=True,
    )
    if summary.skipped:
        kinds = Counter(why.split(":")[0] for _, why in summary.skipped)
        shown = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
        click.echo(f"; skipped: {shown}", err=True)
    for what, why in summary.skipped[:SKIPPED_LISTED]:
        click.echo(f";   skipped {what}: {why}", err=True)
    if len(summary.skipped) > SKIPPED_LISTED:
        click.echo(f";   and {len(summary.skipped) - SKIPPED_LISTED} more skipped", err=True)
    if summary.txt_records == 0 and summary.ptr_records == 0:
        click.echo(
            "geoweb: nothing was published: every jurisdiction was skipped (see above); give "
            "them a domain and a discovery URL, e.g. geoweb import --domain-field and "
            "--discovery-url-field",
            err=True,
        )
        sys.exit(1)


@click.command()
@click.option("--server", required=True, metavar="HOST", help="The zone's primary server.")
@click.option(
    "--port", default=53, show_default=True, type=click.IntRange(1, 65535), help="Its port (TCP)."
)
@click.option("--zone", "zone_name", required=True, metavar="ZONE", help="The zone to update.")
@zone_content_options
@click.option(
    "--tsig-key-file",
    type=click.Path(dir_okay=False),
    help="TSIG key file (BIND tsig-keygen or Knot keymgr format).",
)
@click.option("--tsig-name", metavar="NAME", help="TSIG key name (instead of a key file).")
@click.option("--tsig-secret", metavar="BASE64", help="TSIG secret (instead of a key file).")
@click.option("--tsig-algorithm", default="hmac-sha256", show_default=True, help="TSIG algorithm.")
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds for each exchange with the server.",
)
@click.option(
    "--keep-retired",
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="Keep a retired cell generation this long before a publish deletes it "
    "[default: twice the TTL].",
)
@click.option(
    "--wait",
    is_flag=True,
    help="After switching to a new cell generation, wait until the old one may be deleted, "
    "and delete it.",
)
@click.option("--dry-run", is_flag=True, help="Print the UPDATE messages instead of sending them.")
def publish(
    server: str,
    port: int,
    zone_name: str,
    db: str | None,
    embedded: bool,
    tsig_key_file: str | None,
    tsig_name: str | None,
    tsig_secret: str | None,
    tsig_algorithm: str,
    timeout: float,
    keep_retired: float | None,
    wait: bool,
    dry_run: bool,
    **content: Any,
) -> None:
    """Bring a live zone in line with the registry: RFC 2136 UPDATE signed with TSIG, only the
    difference from what the zone holds (read by AXFR). Running it twice sends nothing twice.

    Atomic for readers: a change too large for one UPDATE is staged as a new cell generation and
    switched to with one final UPDATE; old generations are deleted by a later publish once
    readers can no longer use them."""
    key: TsigKey | None
    if tsig_key_file:
        key = read_key_file(tsig_key_file)
    elif tsig_name or tsig_secret:
        if not (tsig_name and tsig_secret):
            raise InvalidInput("give both --tsig-name and --tsig-secret, or --tsig-key-file")
        key = TsigKey(tsig_name, tsig_secret, tsig_algorithm)
    else:
        key = None
    options = _options(zone_name, max_cells=None, **content)
    publisher = Publisher(
        server, zone_name, key, port=port, timeout=timeout, keep_retired=keep_retired
    )
    jurisdictions = _jurisdictions(db, embedded)
    plan = publisher.plan(jurisdictions, options)
    if plan.empty:
        kept = f" (kept for readers: {', '.join(plan.kept)})" if plan.kept else ""
        click.echo(f"{zone_name}: up to date, nothing to send{kept}")
        return
    if dry_run:
        for update in publisher.updates(plan):
            click.echo(update.to_text())
        click.echo(f"dry run: {plan.summary()}; nothing sent")
        return
    sent = publisher.send(plan)
    click.echo(f"published: {plan.summary()} ({plural(sent, 'UPDATE message')})")
    if wait and plan.switch_to and plan.live:
        hold = publisher.retired_for(publisher.read(), options.ttl)
        click.echo(f"waiting {hold:g} s until generation {plan.live} may be deleted")
        time.sleep(hold + 1)
        plan = publisher.plan(jurisdictions, options)
        if not plan.empty:
            sent = publisher.send(plan)
            click.echo(f"published: {plan.summary()} ({plural(sent, 'UPDATE message')})")


def register_commands(main: click.Group) -> None:
    """Add ``zone`` and ``publish`` to the ``geoweb`` command."""
    main.add_command(zone)
    main.add_command(publish)


__all__ = ["publish", "register_commands", "zone"]
