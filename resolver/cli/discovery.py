"""``geoweb discovery generate``, ``geoweb discovery validate`` and ``geoweb refresh``."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click
import orjson
from tqdm import tqdm

from discovery.documents import ACCEPT
from discovery.fetch import Fetcher, FetchError, FetchLimits, make_session
from discovery.generate import discovery_document, to_json, to_xml
from discovery.validator import SERVED_AS, validate_discovery
from resolver.cli.options import (
    db_option,
    embedded_option,
    fetch_options,
    refresh_concurrency_option,
)
from resolver.cli.output import plural
from resolver.config import Settings
from resolver.core.decide import Resolver
from resolver.registry.documents import load_jurisdictions
from resolver.registry.embedded import open_store
from resolver.runtime import Runtime, fetch_limits
from resolver.sources.discovery import refresh_all


def _limits(fetch_timeout: float, fetch_max_bytes: int) -> FetchLimits:
    return fetch_limits(Settings(fetch_timeout=fetch_timeout, fetch_max_bytes=fetch_max_bytes))


def published_document(jurisdiction: Any, contact: str, key_service: str) -> dict[str, Any]:
    """A conformant discovery document for a jurisdiction, changed a second ago (the validator
    wants changesets in the past); bad input is a usage error."""

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
@embedded_option
def generate(
    jurisdiction_id: str,
    contact: str,
    key_service: str,
    out_dir: Path,
    db: str | None,
    embedded: bool,
) -> None:
    """Write a conformant discovery.json and discovery.xml for a jurisdiction of the store (its
    embedded layer included)."""

    with open_store(Settings(db=db, embedded=embedded)) as store:
        jurisdictions, _source = load_jurisdictions(store)
    jurisdiction = Resolver(jurisdictions).jurisdiction(jurisdiction_id)
    document = published_document(jurisdiction, contact, key_service)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "discovery.json").write_text(to_json(document), encoding="utf-8")
    (out_dir / "discovery.xml").write_text(to_xml(document), encoding="utf-8")
    click.echo(
        f"wrote {out_dir / 'discovery.json'} and {out_dir / 'discovery.xml'}: serve them as "
        f"{SERVED_AS['json']} and {SERVED_AS['xml']} (the open311-validator reads no other)"
    )
    if len(document["endpoints"]) == 1:
        click.echo(
            "warning: one endpoint: the SeeClickFix open311-validator reads a lone <endpoint> "
            "in discovery.xml as a hash and fails it, although it is valid; a second endpoint "
            "(a test one, say) satisfies it",
            err=True,
        )


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
    """Check a discovery document against the open311-validator rules. A URL ending in
    /discovery (the validator's own form) checks discovery.json and discovery.xml beside it.
    Warnings name what that validator fails although the document is right (a lone XML
    endpoint, a media type it does not read). Exit status 0 when every rule passes, 1 when one
    fails."""

    verdicts: list[tuple[str, Any]] = []
    if target.startswith(("http://", "https://")):
        limits = _limits(fetch_timeout, fetch_max_bytes)
        for url, body, content_type in asyncio.run(_fetch_all(target, allow_network, limits)):
            verdicts.append((url, validate_discovery(body, content_type, name=url)))
    else:
        path = Path(target)
        if not path.is_file():
            raise click.BadParameter(f"{target} is neither an http(s) URL nor a file")
        body = path.read_bytes()
        content_type = "application/json" if path.suffix.lower() == ".json" else "text/xml"
        verdicts.append((target, validate_discovery(body, content_type, name=target, served=False)))
    passed = all(verdict.passed for _name, verdict in verdicts)
    if as_json:
        documents = [
            {
                "url": name,
                "passed": verdict.passed,
                "findings": [f.to_dict() for f in verdict.findings],
            }
            for name, verdict in verdicts
        ]
        payload: dict[str, Any] = {"passed": passed, "findings": documents[0]["findings"]}
        if len(documents) > 1 or documents[0]["url"] != target:
            payload["documents"] = documents
        click.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
    else:
        for name, verdict in verdicts:
            if name != target:
                click.echo(f"{name}:")
            for finding in verdict.findings:
                if finding.warning and finding.passed:
                    continue
                mark = "warn" if finding.warning else "pass" if finding.passed else "FAIL"
                click.echo(
                    f"{mark}  {finding.rule}" + (f": {finding.detail}" if finding.detail else "")
                )
            failed = len(verdict.failures)
            summary = "valid" if verdict.passed else f"{plural(failed, 'rule')} failed"
            if verdict.warnings:
                summary += f" ({plural(len(verdict.warnings), 'warning')})"
            click.echo(summary)
    if not passed:
        sys.exit(1)


def _base_name(url: str) -> bool:
    """``https://host/path/discovery``: the open311-validator's way to name the two documents."""
    path = url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    return path.rsplit("/", 1)[-1].lower() == "discovery" and "/" in path.split("://", 1)[-1]


async def _fetch_all(url: str, allow: tuple[str, ...], limits: Any) -> list[tuple[str, bytes, str]]:
    """The document at ``url``; for a base name, ``.json`` then ``.xml`` beside it: each one
    found (the validator wants both), or the first failure when neither is."""
    if not _base_name(url):
        return [(url, *await _fetch(url, allow, limits))]
    found: list[tuple[str, bytes, str]] = []
    errors: list[FetchError] = []
    for suffix in (".json", ".xml"):
        document = url.split("?", 1)[0].rstrip("/") + suffix
        try:
            found.append((document, *await _fetch(document, allow, limits)))
        except FetchError as error:
            errors.append(error)
    if not found:
        raise errors[0]
    return found


async def _fetch(url: str, allow: tuple[str, ...], limits: Any) -> tuple[bytes, str]:

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
@embedded_option
def refresh(
    jurisdiction_ids: tuple[str, ...],
    refresh_concurrency: int,
    allow_network: tuple[str, ...],
    fetch_max_bytes: int,
    fetch_timeout: float,
    db: str | None,
    embedded: bool,
) -> None:
    """Fetch discovery documents and services lists now, into the store's HTTP cache, recording
    each jurisdiction's outcome (shown by GET /v1/jurisdictions/{id}). Exit status 1 when any
    refresh failed."""
    settings = Settings(
        db=db,
        embedded=embedded,
        refresh_concurrency=refresh_concurrency,
        allow_network=allow_network,
        fetch_max_bytes=fetch_max_bytes,
        fetch_timeout=fetch_timeout,
    )
    failures = asyncio.run(_refresh(settings, jurisdiction_ids))
    for jurisdiction_id, reason in failures:
        click.echo(f"failed: {jurisdiction_id}: {reason}", err=True)
    if failures:
        sys.exit(1)


async def _refresh(settings: Settings, ids: tuple[str, ...]) -> list[tuple[str, str]]:
    """Refresh these jurisdictions (all that publish anything when none are named) through the
    runtime the server uses; failed refreshes are not retried later in the run."""
    failures: list[tuple[str, str]] = []

    def on_refresh(jurisdiction: str, ok: bool, reason: str | None, _url: str | None) -> None:
        if not ok:
            failures.append((jurisdiction, reason or "unknown"))

    async with Runtime.open(
        settings, discovery=True, retry_after=0, on_refresh=on_refresh
    ) as runtime:
        answerer, source = runtime.answerer, runtime.discovery
        assert source is not None  # discovery=True
        resolver = answerer.resolver
        chosen = [resolver.jurisdiction(i) for i in ids] if ids else list(resolver.jurisdictions)
        due = [j for j in chosen if source.applies(j)]
        with tqdm(total=len(due), unit=" jurisdictions", file=sys.stderr, disable=None) as bar:
            await refresh_all(
                answerer,
                due,
                concurrency=settings.refresh_concurrency,
                progress=lambda _j: bar.update(),
            )
    return failures


def register_commands(group: click.Group) -> None:
    group.add_command(discovery)
    group.add_command(refresh)
