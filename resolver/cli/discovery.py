"""``geoweb discovery generate``, ``geoweb discovery validate`` and ``geoweb refresh``."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from resolver.cli.options import db_option, fetch_options, refresh_concurrency_option
from resolver.config import Settings


def _limits(fetch_timeout: float, fetch_max_bytes: int) -> Any:
    from discovery.fetch import FetchLimits

    return FetchLimits(
        connect_timeout=min(5.0, fetch_timeout),
        total_timeout=fetch_timeout,
        max_bytes=fetch_max_bytes,
    )


def published_document(jurisdiction: Any, contact: str, key_service: str) -> dict[str, Any]:
    """A conformant discovery document for a jurisdiction, changed a second ago (the validator
    wants changesets in the past); bad input is a usage error."""
    from discovery.generate import discovery_document

    try:
        return discovery_document(
            jurisdiction,
            contact=contact,
            key_service=key_service,
            changeset=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.group()
def discovery() -> None:
    """Open311 service discovery documents: write ours, check anyone's."""


@discovery.command()
@click.argument("jurisdiction_id")
@click.option("--contact", required=True, help="How to reach the operators (not empty).")
@click.option("--key-service", required=True, help="How to get an API key (not empty).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to write discovery.json and discovery.xml into.",
)
@db_option
def generate(
    jurisdiction_id: str, contact: str, key_service: str, out_dir: Path, db: str | None
) -> None:
    """Write a conformant discovery.json and discovery.xml for a jurisdiction of the store (or
    the embedded registry)."""
    from discovery.generate import to_json, to_xml
    from resolver.core.decide import Resolver
    from resolver.registry.documents import load_jurisdictions
    from resolver.store import Store

    with Store(Settings(db=db).db_path) as store:
        jurisdictions, _source = load_jurisdictions(store)
    jurisdiction = Resolver(jurisdictions).jurisdiction(jurisdiction_id)
    document = published_document(jurisdiction, contact, key_service)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "discovery.json").write_text(to_json(document), encoding="utf-8")
    (out_dir / "discovery.xml").write_text(to_xml(document), encoding="utf-8")
    click.echo(f"wrote {out_dir / 'discovery.json'} and {out_dir / 'discovery.xml'}")


@discovery.command()
@click.argument("target", metavar="URL|FILE")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@fetch_options
def validate(
    target: str,
    as_json: bool,
    allow_network: tuple[str, ...],
    fetch_max_bytes: int,
    fetch_timeout: float,
) -> None:
    """Check a discovery document against the open311-validator rules. Exit status 0 when every
    rule passes, 1 when one fails."""
    from discovery.validator import validate_discovery

    if target.startswith(("http://", "https://")):
        body, content_type = asyncio.run(
            _fetch(target, allow_network, _limits(fetch_timeout, fetch_max_bytes))
        )
    else:
        path = Path(target)
        if not path.is_file():
            raise click.BadParameter(f"{target} is neither an http(s) URL nor a file")
        body = path.read_bytes()
        content_type = "application/json" if path.suffix.lower() == ".json" else "text/xml"
    verdict = validate_discovery(body, content_type, name=target)
    if as_json:
        payload = {"passed": verdict.passed, "findings": [f.to_dict() for f in verdict.findings]}
        click.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
    else:
        for finding in verdict.findings:
            mark = "pass" if finding.passed else "FAIL"
            click.echo(
                f"{mark}  {finding.rule}" + (f": {finding.detail}" if finding.detail else "")
            )
        click.echo("valid" if verdict.passed else f"{len(verdict.failures)} rule(s) failed")
    if not verdict.passed:
        sys.exit(1)


async def _fetch(url: str, allow: tuple[str, ...], limits: Any) -> tuple[bytes, str]:
    from discovery.documents import ACCEPT
    from discovery.fetch import Fetcher, make_session

    async with make_session(allow_networks=allow, limits=limits) as session:
        fetched = await Fetcher(session, limits=limits, allow_networks=allow).get(
            url, accept=ACCEPT
        )
    return fetched.body, fetched.content_type


@click.command()
@click.option(
    "--jurisdiction",
    "jurisdiction_ids",
    multiple=True,
    metavar="ID",
    help="Refresh only this jurisdiction (repeatable); default: every one with a discovery "
    "document or endpoint.",
)
@refresh_concurrency_option
@fetch_options
@db_option
def refresh(
    jurisdiction_ids: tuple[str, ...],
    refresh_concurrency: int,
    allow_network: tuple[str, ...],
    fetch_max_bytes: int,
    fetch_timeout: float,
    db: str | None,
) -> None:
    """Fetch discovery documents and services lists now, into the store's HTTP cache, recording
    each jurisdiction's outcome (shown by GET /v1/jurisdictions/{id}). Exit status 1 when any
    refresh failed."""
    failures = asyncio.run(
        _refresh(
            jurisdiction_ids,
            refresh_concurrency,
            allow_network,
            _limits(fetch_timeout, fetch_max_bytes),
            Settings(db=db).db_path,
        )
    )
    for jurisdiction_id, reason in failures:
        click.echo(f"failed: {jurisdiction_id}: {reason}", err=True)
    if failures:
        sys.exit(1)


async def _refresh(
    ids: tuple[str, ...], concurrency: int, allow: tuple[str, ...], limits: Any, db: str
) -> list[tuple[str, str]]:
    from tqdm import tqdm

    from discovery.fetch import Fetcher, make_session
    from resolver.core.decide import Resolver
    from resolver.registry.documents import load_jurisdictions
    from resolver.sources.answering import Answerer
    from resolver.sources.discovery import DiscoverySource, refresh_all
    from resolver.store import Store, StoreHttpCache, record_refresh

    failures: list[tuple[str, str]] = []
    with Store(db) as store:
        jurisdictions, _source = load_jurisdictions(store)
        resolver = Resolver(jurisdictions)
        chosen = [resolver.jurisdiction(i) for i in ids] if ids else list(jurisdictions)

        def on_result(jurisdiction: str, ok: bool, reason: str | None, url: str | None) -> None:
            record_refresh(store, jurisdiction, ok=ok, reason=reason, url=url)
            if not ok:
                failures.append((jurisdiction, reason or "unknown"))

        async with make_session(allow_networks=allow, limits=limits) as session:
            fetcher = Fetcher(
                session, limits=limits, allow_networks=allow, cache=StoreHttpCache(store)
            )
            source = DiscoverySource(fetcher, on_result=on_result, retry_after=0)
            due = [j for j in chosen if source.applies(j)]
            answerer = Answerer(resolver, [source])
            with tqdm(total=len(due), unit=" jurisdictions", file=sys.stderr, disable=None) as bar:
                await refresh_all(
                    answerer, due, concurrency=concurrency, progress=lambda _j: bar.update()
                )
    return failures


def register_commands(group: click.Group) -> None:
    group.add_command(discovery)
    group.add_command(refresh)
