"""The map page at / in a real headless browser (Debian's chromium, driven by Playwright): the
boundaries are drawn, a click inside San Francisco names its endpoint, a point nobody covers
shows the fallback and why, the page works with the keyboard alone and at 375 px, and a page
of another loopback origin reads /service (but may not register) through CORS.

Without chromium or Playwright the tests skip, except under CI=true, where they fail."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import async_playwright

from resolver.config import Settings
from resolver.http.app import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SF_ENDPOINT = "https://mobile311.sfgov.org/open311/v2/"
FALLBACK = "https://fallback.example/open311/v2/"
CITY_HALL = (37.7793, -122.4193)
ServerFactory = Callable[..., Awaitable[TestServer]]


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: the browser tests must run in CI")
    pytest.skip(why)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def base(aiohttp_server: ServerFactory, tmp_path: Path) -> str:
    settings = Settings(db=str(tmp_path / "page.sqlite"), fallback_url=FALLBACK)
    server = await aiohttp_server(create_app(settings))
    return str(server.make_url("")).rstrip("/")


async def _loaded(browser: Any, url: str, **context: Any) -> Any:
    """The page at ``url`` once its boundaries are drawn. A script error fails the test, and so
    does a request to any other server: the page works offline (no CDN, no tiles by default)."""
    page = await (await browser.new_context(**context)).new_page()
    page.on("pageerror", lambda error: pytest.fail(f"script error on the page: {error}"))
    origin = url.split("/", 3)[:3]

    def same_origin(request: Any) -> None:
        if request.url.split("/", 3)[:3] != origin and not request.url.startswith("data:"):
            pytest.fail(f"the page asked another server: {request.url}")

    page.on("request", same_origin)
    await page.goto(url)
    await page.wait_for_selector("#map[data-drawn]", timeout=30_000)
    return page


async def test_the_page_draws_the_boundaries_and_answers_a_click_in_san_francisco(
    browser: Any, base: str, tmp_path: Path
) -> None:
    page = await _loaded(browser, base + "/", viewport={"width": 1280, "height": 800})
    health = await (await page.request.get(base + "/healthz")).json()
    drawn = int(await page.get_attribute("#map", "data-drawn"))
    assert drawn == health["with_boundary"] > 0
    assert await page.locator("path.boundary").count() >= drawn
    # every field has a label
    assert await page.evaluate(
        "[...document.querySelectorAll('input')].every(i => i.labels.length)"
    )

    # zoom to City Hall, then click exactly there with the mouse
    x, y = await page.evaluate(
        """([lat, long]) => {
            window.geowebMap.setView([lat, long], 13, {animate: false});
            const point = window.geowebMap.latLngToContainerPoint([lat, long]);
            const box = document.getElementById('map').getBoundingClientRect();
            return [box.left + point.x, box.top + point.y];
        }""",
        list(CITY_HALL),
    )
    await page.mouse.click(x, y)
    await page.wait_for_selector("#answer[data-endpoint]")
    assert await page.get_attribute("#answer", "data-endpoint") == SF_ENDPOINT
    assert await page.get_attribute("#answer", "data-fallback") == "false"
    answer = await page.inner_text("#answer")
    assert "San Francisco" in answer and "Where each fact came from" in answer
    assert "registry" in answer  # each fact's source is shown
    links = page.locator("#answer a[href$='.geojson'], #answer a[href$='.kml']")
    assert await links.count() == 2
    shot = tmp_path / "map-san-francisco.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")  # shown with pytest -s


async def test_a_point_nobody_covers_shows_the_fallback_and_why(browser: Any, base: str) -> None:
    page = await _loaded(browser, base + "/")
    await page.fill("#lat", "0")
    await page.fill("#long", "-30")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#answer[data-endpoint]")
    assert await page.get_attribute("#answer", "data-fallback") == "true"
    assert await page.get_attribute("#answer", "data-endpoint") == FALLBACK
    assert "no jurisdiction covers this point" in await page.inner_text("#answer")
    # a bad coordinate is said plainly, not a blank page
    await page.fill("#lat", "91")
    await page.click("button[type=submit]")
    await page.wait_for_function("document.getElementById('answer').innerText.includes('lat')")
    assert "Not answered" in await page.inner_text("#answer")


async def test_the_page_works_with_the_keyboard_alone(browser: Any, base: str) -> None:
    page = await _loaded(browser, base + "/")
    # Tab from the top reaches the latitude field, then each field in order
    for _ in range(12):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "lat":
            break
    else:
        pytest.fail("Tab never reached the latitude field")
    await page.keyboard.type(str(CITY_HALL[0]))
    await page.keyboard.press("Tab")
    await page.keyboard.type(str(CITY_HALL[1]))
    await page.keyboard.press("Tab")
    await page.keyboard.type("pothole")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#answer[data-endpoint]")
    assert await page.get_attribute("#answer", "data-endpoint") == SF_ENDPOINT
    assert "unverified" in await page.inner_text("#answer")  # SF's services are not known here
    # the map itself: focused, Enter asks about its centre (moved there with the arrow keys)
    await page.evaluate("window.geowebMap.setView([0, -30], 5, {animate: false})")
    await page.focus("#map")
    await page.keyboard.press("ArrowLeft")
    await page.keyboard.press("Enter")
    await page.wait_for_function("document.getElementById('answer').dataset.fallback === 'true'")
    # search by name, then reach the result's button and boundary links with Tab
    await page.focus("#q")
    await page.keyboard.type("philadel")
    first = page.locator("#found li").first
    assert "Philadelphia" in await first.inner_text()
    assert await first.locator("a[href$='philadelphia-pa.geojson']").count() == 1
    assert await first.locator("a[href$='philadelphia-pa.kml']").count() == 1
    await page.keyboard.press("Tab")
    focused = await page.evaluate("document.activeElement.textContent")
    assert focused.startswith("Philadelphia")


async def test_the_page_fits_a_phone_screen(browser: Any, base: str, tmp_path: Path) -> None:
    page = await _loaded(browser, base + "/", viewport={"width": 375, "height": 812})
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    box = await page.locator("#lat").bounding_box()
    assert box is not None and box["width"] > 200  # the fields take the screen's width
    await page.screenshot(path=str(tmp_path / "map-375px.png"), full_page=True)


async def test_a_page_of_another_origin_reads_service_but_may_not_register(
    browser: Any, base: str, aiohttp_server: ServerFactory
) -> None:
    script = f"""
    <!doctype html><title>another app</title><body><script>
    // In the body: a fetch may answer before the parser would have made a body after a script
    // in the head, and the handlers below write to it.
    fetch("{base}/service?lat={CITY_HALL[0]}&long={CITY_HALL[1]}")
      .then(r => r.json())
      .then(body => {{ document.body.dataset.result = JSON.stringify(body); }})
      .catch(error => {{ document.body.dataset.result = "failed: " + error; }});
    fetch("{base}/v1/registry/challenges", {{
      method: "POST", headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{domain: "example.org", jurisdiction: "x"}})
    }}).then(r => {{ document.body.dataset.register = "read " + r.status; }})
      .catch(() => {{ document.body.dataset.register = "blocked"; }});
    </script>"""

    async def other_app(_request: web.Request) -> web.Response:
        return web.Response(text=script, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", other_app)
    other = await aiohttp_server(app)
    page = await (await browser.new_context()).new_page()
    await page.goto(str(other.make_url("/")))
    await page.wait_for_selector("body[data-result][data-register]", state="attached")
    result = await page.get_attribute("body", "data-result")
    assert result is not None and not result.startswith("failed"), result
    assert SF_ENDPOINT in result
    assert await page.get_attribute("body", "data-register") == "blocked"
