"""Registration over HTTP (docs/registry.md#registration): ``POST /v1/registry/challenges``,
``POST /v1/registry/jurisdictions`` and ``DELETE /v1/registry/jurisdictions/{id}``. The rules
(challenges, the DNS proof, entry checks, the transaction) are in
:mod:`resolver.registry.registration`; these handlers read requests and write answers."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from common.errors import InvalidInput, MissingParameter
from resolver.http.errors import json_response
from resolver.http.keys import REGISTRAR, REGISTRY
from resolver.http.params import read_json_object
from resolver.registry.registration import (
    check_jurisdiction_id,
    entry_from_feature,
    normalize_domain,
)
from resolver.store.aio import in_thread

#: Registration answers are about one moment's state: never cached.
NO_STORE = {"Cache-Control": "no-store"}


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/registry/challenges", create_challenge)
    app.router.add_post("/v1/registry/jurisdictions", register_jurisdiction)
    app.router.add_delete("/v1/registry/jurisdictions/{id}", withdraw_jurisdiction)


def _token(body: dict[str, Any]) -> str:
    token = body.get("token")
    if token is None or token == "":
        raise MissingParameter("token")
    if not isinstance(token, str):
        raise InvalidInput("token must be a string", parameter="token")
    return token


def _domain(body: dict[str, Any]) -> str:
    if body.get("domain") is None:
        raise MissingParameter("domain")
    return normalize_domain(body["domain"])


async def create_challenge(request: web.Request) -> web.Response:
    """``POST /v1/registry/challenges``: a token and the TXT record that proves it."""
    body = await read_json_object(request)
    domain = _domain(body)
    if body.get("jurisdiction") is None:
        raise MissingParameter("jurisdiction")
    jurisdiction = check_jurisdiction_id(body["jurisdiction"])
    registrar = request.app[REGISTRAR]
    token, challenge = await in_thread(registrar.issue, domain, jurisdiction)
    return json_response(challenge.to_dict(token), status=201, headers=NO_STORE)


async def register_jurisdiction(request: web.Request) -> web.Response:
    """``POST /v1/registry/jurisdictions``: save an entry once its domain proved control."""
    body = await read_json_object(request)
    token = _token(body)
    domain = _domain(body)
    if body.get("feature") is None:
        raise MissingParameter("feature")
    registrar = request.app[REGISTRAR]
    registrar.admit(domain)
    challenge = await in_thread(registrar.find, token)
    entry, notes = entry_from_feature(body["feature"], domain)
    challenge.check(domain, entry.id)
    await in_thread(registrar.check_free, entry.id, domain)  # before asking DNS
    await registrar.prove(challenge)
    async with registrar.lock:
        replaced = await in_thread(registrar.save, challenge, entry, notes)
    follower = request.app[REGISTRY]
    await follower.catch_up()
    resolver = follower.answerer.resolver
    saved = resolver.jurisdiction(entry.id) if entry.id in resolver else entry
    return json_response(
        {
            "registered": entry.id,
            "domain": domain,
            "replaced": replaced,
            "jurisdiction": saved.to_dict(),
            "notes": notes,
            "serial": follower.serial,
            "href": f"/v1/jurisdictions/{quote(entry.id, safe='')}",
        },
        status=200 if replaced else 201,
        headers=NO_STORE,
    )


async def withdraw_jurisdiction(request: web.Request) -> web.Response:
    """``DELETE /v1/registry/jurisdictions/{id}``: delete the domain's own entry, with proof."""
    jurisdiction = check_jurisdiction_id(request.match_info["id"])
    body = await read_json_object(request)
    token = _token(body)
    domain = _domain(body)
    registrar = request.app[REGISTRAR]
    registrar.admit(domain)
    challenge = await in_thread(registrar.find, token)
    challenge.check(domain, jurisdiction)
    await in_thread(registrar.check_own, jurisdiction, domain)  # before asking DNS
    await registrar.prove(challenge)
    async with registrar.lock:
        await in_thread(registrar.withdraw, challenge)
    follower = request.app[REGISTRY]
    await follower.catch_up()
    return json_response(
        {"deleted": jurisdiction, "domain": domain, "serial": follower.serial}, headers=NO_STORE
    )
