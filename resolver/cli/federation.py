"""``geoweb mirror add|list|remove|sync`` and ``geoweb registry status|export``."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson
from tqdm import tqdm

from common.errors import GeoWebError, SyncError
from discovery.fetch import FetchLimits
from resolver.cli.options import db_option, dns_options, embedded_option, setting_options
from resolver.cli.output import plural
from resolver.config import SETTINGS_BY_NAME, Settings
from resolver.registry.embedded import layers, open_store
from resolver.registry.export import export_registry
from resolver.registry.mirror import dns_attestation, normalize_upstream, sync_mirror
from resolver.runtime import Runtime
from resolver.store import Store

#: The largest change page or snapshot a sync reads (pages carry boundaries), in bytes.
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024


@click.group()
def mirror() -> None:
    """Mirror other registries: pull their changes, apply the newer entries."""


@mirror.command("add")
@click.argument("url")
@db_option
def mirror_add(url: str, db: str | None) -> None:
    """Mirror the registry served at URL (the base URL of a geoweb serve, or any server of
    /v1/registry/changes). The first sync reads it from the start."""

    upstream = normalize_upstream(url)
    with Store(Settings(db=db).db_path) as store:
        added = store.add_mirror(upstream)
    click.echo(f"{'mirroring' if added else 'already mirroring'} {upstream}")


@mirror.command("remove")
@click.argument("url")
@db_option
def mirror_remove(url: str, db: str | None) -> None:
    """Stop mirroring URL. Entries already mirrored stay until a newer copy or a deletion comes."""

    upstream = normalize_upstream(url)
    with Store(Settings(db=db).db_path) as store:
        if not store.remove_mirror(upstream):
            raise click.ClickException(f"{upstream} is not mirrored")
    click.echo(f"stopped mirroring {upstream}")


@mirror.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@db_option
def mirror_list(as_json: bool, db: str | None) -> None:
    """The mirrored registries: how far each was read, and the last failure."""

    with Store(Settings(db=db).db_path) as store:
        mirrors = store.mirrors()
    if as_json:
        click.echo(orjson.dumps([m.to_dict() for m in mirrors], option=orjson.OPT_INDENT_2))
        return
    for m in mirrors:
        status = "ok" if m.last_error is None else f"failing ({m.failures}x): {m.last_error}"
        synced = m.last_success_at or "never"
        click.echo(f"{m.url}\tserial {m.last_serial}\tlast synced {synced}\t{status}")


@mirror.command("sync")
@click.option("--once", is_flag=True, help="Sync each upstream once and exit (default: forever).")
@click.option(
    "--interval",
    default=SETTINGS_BY_NAME["mirror_interval"].default,
    show_default=True,
    type=click.FloatRange(1, 7 * 86400),
    help="Seconds between rounds when not --once.",
)
@click.option(
    "--page-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, 5000),
    help="Entries asked for per page (each page is applied in one transaction).",
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds one page may take to arrive in all.",
)
@click.option(
    "--max-bytes",
    default=MAX_DOCUMENT_BYTES,
    show_default=True,
    type=click.IntRange(1024),
    help="Largest page or snapshot read, in bytes; reading stops there and the sync fails.",
)
@setting_options("allow_network")
@dns_options
@db_option
@embedded_option
def mirror_sync(
    once: bool,
    interval: float,
    page_size: int,
    timeout: float,
    max_bytes: int,
    **options: Any,
) -> None:
    """Pull every upstream's changes into the store. Exit status 1 when an upstream failed
    (--once); the pages applied before a failure stay applied, and the next sync resumes.
    An upstream's claim that an entry is attested counts only when the domain's own DNS,
    asked through --dns-nameserver, confirms it (without one, none counts)."""
    settings = Settings(**options)
    limits = FetchLimits(
        connect_timeout=min(5.0, timeout), total_timeout=timeout, max_bytes=max_bytes
    )
    while True:
        failed = asyncio.run(_sync_round(settings, limits, page_size))
        if once:
            sys.exit(1 if failed else 0)
        time.sleep(interval)


async def _sync_round(settings: Settings, limits: FetchLimits, page_size: int) -> bool:
    """One sync of every upstream, through the runtime the server uses (with larger, slower
    fetches, kept out of the HTTP cache: a page is applied once)."""
    failed = False
    attest = dns_attestation(settings)
    async with Runtime.open(settings, limits=limits, http_cache=False) as runtime:
        store = runtime.store
        mirrors = store.mirrors()
        if not mirrors:
            click.echo("nothing to sync: add an upstream with geoweb mirror add URL", err=True)
        for m in mirrors:
            with tqdm(desc=m.url, unit=" changes", file=sys.stderr, disable=None) as bar:

                def progress(done: int, total: int, bar: Any = bar) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                try:
                    result = await sync_mirror(
                        store,
                        m.url,
                        runtime.fetcher,
                        page_size=page_size,
                        progress=progress,
                        attest=attest,
                    )
                except SyncError as error:
                    failed = True
                    click.echo(f"failed: {m.url}: {error.detail}", err=True)
                    continue
            click.echo(orjson.dumps(result.to_dict()).decode())
    return failed


@click.group()
def registry() -> None:
    """This store as a registry: its id, serial, conflicts, and exports."""


@registry.command("status")
@db_option
@embedded_option
def registry_status(db: str | None, embedded: bool) -> None:
    """Print the registry id, serial, entries (in all and by layer), upstreams and the latest
    conflicts as JSON."""

    with open_store(Settings(db=db, embedded=embedded)) as store:
        registry_id, _serial, entries = store.snapshot()
        body = {
            "id": registry_id,
            "serial": store.serial,
            "entries": len(entries),
            "layers": layers(entries, registry_id),
            "mirrors": [m.to_dict() for m in store.mirrors()],
            "conflicts": store.conflicts(20),
        }
    click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())


@registry.command("export")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@db_option
@embedded_option
def registry_export(out: Path, db: str | None, embedded: bool) -> None:
    """Write the registry to OUT: a GeoPackage (.gpkg) for GIS software, or the registry's
    GeoJSON (.geojson/.json) as GET /v1/registry serves it."""

    with open_store(Settings(db=db, embedded=embedded)) as store:
        registry_id, serial, entries = store.snapshot()
    try:
        export_registry(entries, out, registry_id=registry_id, serial=serial)
    except GeoWebError as error:
        raise click.ClickException(error.detail) from None
    click.echo(
        f"wrote {plural(len(entries), 'jurisdiction')} (registry {registry_id}, serial {serial}) "
        f"to {out}"
    )


def register_commands(group: click.Group) -> None:
    group.add_command(mirror)
    group.add_command(registry)
