"""``geoweb report``: file a problem at a point where the answer says, with
:class:`~resolver.client.GeoWebClient`."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click
import orjson
from click.core import ParameterSource

from discovery.georeport import Uncertain
from resolver.cli.options import (
    db_option,
    dns_options,
    dns_registry_options,
    embedded_option,
    fallback_options,
    fetch_options,
)
from resolver.client import GeoWebClient, NowhereToReport, ReportResult
from resolver.config import Settings
from resolver.core.decide import parse_coordinate
from resolver.runtime import fetch_limits

#: Options that choose how the local registry answers; with --resolver, the resolver's does.
LOCAL_OPTIONS = (
    "db",
    "embedded",
    "fallback_url",
    "fallback_name",
    "dns_nameserver",
    "dns_port",
    "dns_timeout",
    "dns_registry_zone",
    "dns_registry_mode",
)

#: Exit statuses besides 0 (filed), 1 (not filed: the city or the resolver failed, refused or
#: could not be reached) and 2 (bad input, nothing sent).
EXIT_NOWHERE = 3
EXIT_UNCERTAIN = 4


def _attributes(values: tuple[str, ...]) -> dict[str, str | list[str]]:
    """``CODE=VALUE`` options as attributes; a code given more than once has several values (a
    multivaluelist)."""
    found: dict[str, list[str]] = {}
    for item in values:
        code, sep, value = item.partition("=")
        if not sep or not code.strip():
            raise click.BadParameter(f"{item!r} is not CODE=VALUE", param_hint="'--attribute'")
        found.setdefault(code.strip(), []).append(value)
    return {code: v[0] if len(v) == 1 else v for code, v in found.items()}


def _describe(result: ReportResult) -> list[str]:
    if result.service_request_id:
        lines = [f"filed: service_request_id {result.service_request_id}"]
    elif result.token:
        lines = [f"filed: token {result.token} (the endpoint gives the service_request_id later)"]
    else:
        lines = ["filed (a blackbox service: the endpoint gives no id)"]
    lines.append(f"endpoint: {result.endpoint}")
    j = result.jurisdiction
    if result.adhoc:
        why = {
            "no_jurisdiction": "no jurisdiction covers this point",
            "concern_not_offered": "no jurisdiction covering this point offers the concern",
            "no_endpoint": f"{j['name'] if j else 'the jurisdiction'} has no GeoReport v2 endpoint",
        }.get(result.reason or "", result.reason or "")
        lines.append(f"ad hoc service: {why}" if why else "ad hoc service")
    elif j is not None:
        jid = f", jurisdiction_id {result.jurisdiction_id}" if result.jurisdiction_id else ""
        lines.append(f"jurisdiction: {j.get('id')} ({j.get('name')}){jid}")
    lines.append(f"service: {result.service_code} ({result.service_name})")
    if result.notice:
        lines.append(f"notice: {result.notice}")
    return lines


@click.command()
@click.option("--lat", required=True, help="Latitude, WGS84 decimal degrees.")
@click.option("--long", "long_", required=True, help="Longitude, WGS84 decimal degrees.")
@click.option(
    "--concern",
    required=True,
    help="What is wrong: words like 'pothole' or a service_code, matched against the endpoint's "
    "services list (no match, or several equally good: nothing is sent, the candidates listed).",
)
@click.option("--description", required=True, help="The report itself, free text.")
@click.option(
    "--attribute",
    "attributes",
    multiple=True,
    metavar="CODE=VALUE",
    help="An attribute of the service's definition (repeat for several; repeat a code for a "
    "multivaluelist). Checked against the definition before anything is sent.",
)
@click.option("--email", help="Your e-mail address, for the city.")
@click.option("--first-name", help="Your given name, for the city.")
@click.option("--last-name", help="Your family name, for the city.")
@click.option("--phone", help="Your phone number, for the city.")
@click.option("--media-url", metavar="URL", help="A photo or other media of the problem.")
@click.option("--address-string", metavar="TEXT", help="The address, as people write it.")
@click.option(
    "--api-key", metavar="KEY", help="The API key the endpoint gave you (sent as api_key)."
)
@click.option(
    "--resolver",
    metavar="URL",
    help="A GeoWeb DNS server to ask (its /v1/resolve; it and its own ad hoc service are reached "
    "on any address). Without it the local registry answers, as 'geoweb resolve' does, with "
    "--db, --embedded, --fallback-url and the DNS options (only then).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@db_option
@embedded_option
@fallback_options
@dns_options
@dns_registry_options
@fetch_options
@click.pass_context
def report(
    ctx: click.Context,
    lat: str,
    long_: str,
    concern: str,
    description: str,
    attributes: tuple[str, ...],
    email: str | None,
    first_name: str | None,
    last_name: str | None,
    phone: str | None,
    media_url: str | None,
    address_string: str | None,
    api_key: str | None,
    resolver: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Report a problem at a point: resolve it, choose the endpoint's service for the concern,
    check the attributes against the service definition, POST the request, and print the
    service_request_id (or the token) and where it went. When the answer falls back to an ad hoc
    service, the report goes there.

    \b
    Exit status:
      0  filed
      1  not filed: the endpoint refused it or failed, or the endpoint or the
         resolver could not be reached or read
      2  bad input, nothing sent: a required attribute missing, an unknown
         attribute or value, a concern matching no service or several
      3  no endpoint and no fallback: nowhere to send it
      4  it may have been filed (the connection was lost after sending, or the
         answer could not be read): check with the city before sending again

    Endpoints named by answers are reached only on public addresses, unless --allow-network
    lists more."""
    point = parse_coordinate(lat, "lat"), parse_coordinate(long_, "long")
    given_attributes = _attributes(attributes)
    limits = fetch_limits(
        Settings(fetch_timeout=options["fetch_timeout"], fetch_max_bytes=options["fetch_max_bytes"])
    )
    if resolver:
        given = [
            f"--{name.replace('_', '-')}"
            for name in LOCAL_OPTIONS
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(
                f"{', '.join(given)}: for local resolution only; with --resolver, the resolver "
                "answers from its own registry"
            )
        client = GeoWebClient(resolver, allow_networks=options["allow_network"], limits=limits)
    else:
        client = GeoWebClient(settings=Settings(**options))

    async def run() -> ReportResult:
        async with client:
            return await client.report(
                *point,
                concern,
                description,
                given_attributes,
                email=email,
                first_name=first_name,
                last_name=last_name,
                phone=phone,
                media_url=media_url,
                address_string=address_string,
                api_key=api_key,
            )

    try:
        result = asyncio.run(run())
    except NowhereToReport as error:
        click.echo(f"geoweb: {error.detail}", err=True)
        sys.exit(EXIT_NOWHERE)
    except Uncertain as error:
        click.echo(f"geoweb: {error.detail}", err=True)
        sys.exit(EXIT_UNCERTAIN)
    if as_json:
        click.echo(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo("\n".join(_describe(result)))


def register_commands(main: click.Group) -> None:
    main.add_command(report)
