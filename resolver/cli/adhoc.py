"""``geoweb adhoc list|show|forward|cancel``: the operator's view of the requests the ad hoc
service holds, and of their forwarding (docs/adhoc.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import click
import orjson

from common.errors import InvalidInput
from resolver.adhoc.forwarder import Forwarder, Outcome, load_keys, open_forwarder
from resolver.cli.options import db_option, embedded_option, fetch_options, setting_options
from resolver.cli.output import plural
from resolver.config import SETTINGS_BY_NAME, Settings
from resolver.runtime import Runtime
from resolver.store import Store
from resolver.store.adhoc import FORWARD_STATES, AdhocRequest
from resolver.store.aio import in_thread

#: States an operator may cancel a request in (not while a POST may be under way, nor after).
CANCELLABLE = ("held", "unmatched", "uncertain", "refused")


def _print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") if value else "-"


@click.group()
def adhoc() -> None:
    """The requests the ad hoc service holds, and their forwarding to the cities."""


@adhoc.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(FORWARD_STATES),
    help="Only requests in this forwarding state (repeatable).",
)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@db_option
def adhoc_list(states: tuple[str, ...], limit: int, as_json: bool, db: str | None) -> None:
    """List held requests, newest first, with where each stands."""
    with Store(Settings(db=db).db_path) as store:
        rows = store.adhoc_requests(forward_states=states, limit=limit, private=True)
        counts = store.adhoc_counts()
    if as_json:
        _print_json({"counts": counts, "requests": [r.to_dict() for r in rows]})
        return
    for r in rows:
        where = r.forward_id or r.forward_token or ""
        click.echo(
            f"{r.id}  {_when(r.requested)}  {r.service_code:<18} {r.forward_state:<10} "
            f"{r.forward_jurisdiction or '-'} {where}".rstrip()
        )
        if r.forward_note:
            click.echo(f"    {r.forward_note}")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    click.echo(f"{plural(len(rows), 'request')} shown; in the store: {summary}")


@adhoc.command("show")
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@db_option
def adhoc_show(request_id: str, as_json: bool, db: str | None) -> None:
    """Everything about one request, the reporter's contact details included."""
    with Store(Settings(db=db).db_path) as store:
        found = store.adhoc_request(request_id, private=True)
    if found is None:
        raise InvalidInput(f"no ad hoc request {request_id!r}")
    data = found.to_dict()
    if as_json:
        _print_json(data)
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        if value not in (None, "", {}, []):
            click.echo(f"{key:<{width}}  {value}")


@adhoc.command("forward")
@click.argument("request_ids", nargs=-1)
@click.option(
    "--resend",
    is_flag=True,
    help="Send the named uncertain or refused requests (again): only once you know the city "
    "does not have them.",
)
@click.option(
    "--filed-as",
    metavar="CITY_ID",
    help="Record that the one named uncertain request is the city's service request CITY_ID "
    "(found out from the city), instead of sending it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@db_option
@embedded_option
@setting_options("adhoc_forward_keys")
@fetch_options
def adhoc_forward(
    request_ids: tuple[str, ...],
    resend: bool,
    filed_as: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Forward now: every held request that has somewhere to go (or only REQUEST_IDS), then read
    back the status of the forwarded ones, as a running `geoweb serve` does by itself."""
    if (resend or filed_as) and not request_ids:
        raise click.UsageError("--resend and --filed-as need the ids of the requests")
    if filed_as and (resend or len(request_ids) != 1):
        raise click.UsageError("--filed-as takes exactly one request id, without --resend")
    settings = Settings(**{k: v for k, v in options.items() if k in SETTINGS_BY_NAME})
    keys = load_keys(settings.adhoc_forward_keys) if settings.adhoc_forward_keys else {}
    outcomes = asyncio.run(_forward(settings, keys, request_ids, resend, filed_as))
    if as_json:
        _print_json([o.to_dict() for o in outcomes])
        return
    for o in outcomes:
        click.echo(f"{o.request_id}  {o.state:<10} {o.note}")
    if not outcomes:
        click.echo("nothing to forward")


async def _forward(
    settings: Settings,
    keys: dict[str, str],
    request_ids: tuple[str, ...],
    resend: bool,
    filed_as: str | None,
) -> list[Outcome]:
    async with Runtime.open(settings) as runtime:
        forwarder = open_forwarder(runtime, keys)
        if filed_as:
            return [await _record_filed(forwarder, request_ids[0], filed_as)]
        if resend:
            return [await _resend(forwarder, request_id) for request_id in request_ids]
        outcomes = await forwarder.forward_due(changed=True, ids=request_ids)
        return outcomes + await forwarder.poll_due(ids=request_ids)


async def _request(forwarder: Forwarder, request_id: str) -> AdhocRequest:
    found = await in_thread(forwarder.store.adhoc_request, request_id, private=True)
    if found is None:
        raise InvalidInput(f"no ad hoc request {request_id!r}")
    return found


async def _resend(forwarder: Forwarder, request_id: str) -> Outcome:
    found = await _request(forwarder, request_id)
    if found.forward_state not in ("uncertain", "refused"):
        raise InvalidInput(
            f"{request_id} is {found.forward_state}: only uncertain or refused requests are "
            "re-sent (held ones are sent without --resend)"
        )
    return await forwarder.forward(found, resend=True)


async def _record_filed(forwarder: Forwarder, request_id: str, city_id: str) -> Outcome:
    found = await _request(forwarder, request_id)
    moved = await in_thread(
        forwarder.store.adhoc_transition,
        request_id,
        ("uncertain",),
        "forwarded",
        forward_id=city_id,
        forward_done=dt.datetime.now(dt.UTC),
        forward_next=dt.datetime.now(dt.UTC),
        forward_note=f"recorded by the operator as the city's {city_id}",
    )
    if moved is None:
        raise InvalidInput(f"{request_id} is {found.forward_state}, not uncertain")
    return Outcome(request_id, "forwarded", f"recorded as the city's {city_id}")


@adhoc.command("cancel")
@click.argument("request_ids", nargs=-1, required=True)
@click.option("--reason", default="cancelled by the operator", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@db_option
def adhoc_cancel(request_ids: tuple[str, ...], reason: str, as_json: bool, db: str | None) -> None:
    """Stop forwarding these requests and close them (a request being sent, or already with a
    city, cannot be cancelled here). Each is cancelled on its own: one that cannot be leaves
    the others cancelled, and the exit status is 2."""
    outcomes: list[Outcome] = []
    with Store(Settings(db=db).db_path) as store:
        for request_id in request_ids:
            moved = store.adhoc_transition(
                request_id,
                CANCELLABLE,
                "cancelled",
                status="closed",
                status_notes=reason,
                forward_note=reason,
                forward_next=None,
            )
            if moved is not None:
                outcomes.append(Outcome(request_id, "cancelled", reason))
                continue
            found = store.adhoc_request(request_id)
            state = found.forward_state if found else "unknown"
            outcomes.append(Outcome(request_id, state, f"{state}: it cannot be cancelled"))
    if as_json:
        _print_json([o.to_dict() for o in outcomes])
    else:
        for o in outcomes:
            click.echo(f"{o.request_id}  {o.note if o.state != 'cancelled' else 'cancelled'}")
    failed = [o for o in outcomes if o.state != "cancelled"]
    if failed:
        raise InvalidInput(f"{plural(len(failed), 'request')} could not be cancelled")


def register_commands(group: click.Group) -> None:
    group.add_command(adhoc)
