"""Running the app on a socket: ``geoweb serve``, the tests' live servers and the benchmarks.

Three things aiohttp's ``run_app`` does not do the way this service needs:

- the port is bound before the runtime opens, so a busy port is one line at once
  (:class:`PortUnavailable`), not a traceback after the registry has loaded;
- what aiohttp refuses before any middleware runs (a request line or header over 8,190 bytes,
  a malformed method, a body that is not HTTP) is answered in the API's one JSON error body,
  and logged in one line without a traceback, since it is the client's mistake;
- the access log costs little: one combined-format line made by one f-string (the time text
  made once a second) into a buffer written every half second, not a ``logging`` record per
  request; it may be JSON (``--access-log-json``) or off (``--no-access-log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import time
import uuid
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from common.errors import InvalidInput
from resolver.http.errors import JSON, REQUEST_ID_HEADER, error_body
from resolver.http.keys import SETTINGS
from resolver.http.operators import JsonAccessLogger

log = logging.getLogger(__name__)
#: The logger aiohttp's protocol errors would go to; ours go there too, in one line.
SERVER_LOG = logging.getLogger("aiohttp.server")
ACCESS_LOG = logging.getLogger("aiohttp.access")


class PortUnavailable(InvalidInput):
    """The address to listen on cannot be had: in use, not this machine's, or not allowed."""

    code = "port_unavailable"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (IPv6 when the host is one), or
    :class:`PortUnavailable` saying why in one sentence."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        why = {
            errno.EADDRINUSE: "is in use by another program; stop it or choose another --port",
            errno.EACCES: "needs privileges this user lacks; choose a port above 1023",
            errno.EADDRNOTAVAIL: "is not an address of this machine; check --host",
        }.get(exc.errno or 0, f"cannot be listened on ({exc.strerror})")
        raise PortUnavailable(f"{host}:{port} {why}") from None
    except (socket.gaierror, UnicodeError) as exc:
        sock.close()
        raise PortUnavailable(f"{host}:{port} cannot be listened on ({exc})") from None
    sock.setblocking(False)
    return sock


class _JsonErrorProtocol(RequestHandler):
    """aiohttp's protocol, answering what it cannot parse in the API's one error body."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # a bug, or a handler that escaped the error middleware: say it loudly
            response = super().handle_error(request, status, exc, message)
            code, detail = "internal_error", "the server failed to answer this request"
        else:
            if request.writer.output_size > 0:
                raise ConnectionError("the response was already being sent")
            reason = str(getattr(exc, "message", None) or exc or message or "")[:200]
            SERVER_LOG.info("refused a malformed request from %s: %r", request.remote, reason)
            # The detail never echoes what was sent: it is the client's bytes, of any kind.
            if isinstance(exc, LineTooLong):
                code = "request_too_large"
                detail = "the request line or a header is longer than this server reads"
            elif isinstance(exc, BadHttpMethod):
                code, detail = "malformed_request", "the method is not an HTTP method token"
            else:
                code, detail = "malformed_request", "the request is not valid HTTP/1.1"
            response = web.Response(status=status)
        body = error_body(code, detail, uuid.uuid4().hex)
        answer = web.Response(
            status=response.status,
            body=orjson.dumps(body),
            content_type=JSON,
            headers={REQUEST_ID_HEADER: body["request_id"], "Cache-Control": "no-store"},
        )
        answer.force_close()
        return answer


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorProtocol(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An ``AppRunner`` whose connections answer protocol errors as JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app's own server, made by aiohttp with every setting; only the protocol class
        # it makes per connection changes.
        server.__class__ = _JsonErrorServer
        return server


class LineBuffer:
    """Access log lines for one file descriptor, written in whole lines every ``interval``
    seconds (or once ``limit`` bytes wait), so a request costs an append, not a write.

    Each write is at most ``PIPE_BUF`` bytes of whole lines: workers sharing stderr never
    interleave within a line."""

    CHUNK = 4096

    def __init__(self, fd: int = 2, interval: float = 0.5, limit: int = 64 * 1024) -> None:
        self.fd, self.interval, self.limit = fd, interval, limit
        self.lines: list[str] = []
        self.size = 0
        self.scheduled = False

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line)
        if self.size >= self.limit:
            self.flush()
        elif not self.scheduled:
            self.scheduled = True
            try:
                asyncio.get_running_loop().call_later(self.interval, self.flush)
            except RuntimeError:  # no loop (a test logging by hand): write at once
                self.flush()

    def flush(self) -> None:
        self.scheduled = False
        if not self.lines:
            return
        data = "".join(self.lines).encode("utf-8", "backslashreplace")
        self.lines.clear()
        self.size = 0
        view = memoryview(data)
        while view:
            chunk = view[: self.CHUNK]
            if len(view) > self.CHUNK:  # end the chunk on a line boundary
                cut = bytes(chunk).rfind(b"\n")
                chunk = view[: cut + 1] if cut >= 0 else chunk
            try:
                written = os.write(self.fd, chunk)
            except OSError:  # stderr gone: the log is lost, the service is not
                return
            view = view[written:]


#: The process's access log buffer (stderr); flushed at shutdown by :func:`run_server`.
ACCESS_BUFFER = LineBuffer()


class LeanAccessLogger(AbstractAccessLogger):
    """The combined log format (as aiohttp's default, Apache's and nginx's) and the seconds
    taken, without aiohttp's per-request format interpretation and ``logging`` record; the
    request target as it came (as Apache logs it), not parsed again."""

    _second = -1
    _stamp = ""

    def log(self, request: BaseRequest, response: web.StreamResponse, time_: float) -> None:
        now = int(time.time())
        cls = LeanAccessLogger
        if now != cls._second:
            cls._second = now
            cls._stamp = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(now))
        headers = request.headers
        version = request.version
        ACCESS_BUFFER.add(
            f'{request.remote or "-"} - - {cls._stamp} "{request.method} {request.raw_path} '
            f'HTTP/{version.major}.{version.minor}" {response.status} {response.body_length} '
            f'"{headers.get("Referer", "-")}" "{headers.get("User-Agent", "-")}" '
            f"{time_:.6f}\n"
        )


def runner_options(app: web.Application) -> dict[str, Any]:
    """The access log the settings ask for: lean text lines (also without settings, as the
    benchmark's trivial server runs), JSON objects, or none."""
    settings = app.get(SETTINGS)
    if settings is not None and not settings.access_log:
        return {"access_log": None}
    if settings is not None and settings.access_log_json:
        return {"access_log_class": JsonAccessLogger, "access_log": ACCESS_LOG}
    return {"access_log_class": LeanAccessLogger, "access_log": ACCESS_LOG}


async def start(app: web.Application, sock: socket.socket) -> web.AppRunner:
    """Start ``app`` on a bound socket; ``await runner.cleanup()`` stops it."""
    runner = JsonErrorRunner(app, **runner_options(app))
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


async def _serve(app: web.Application, sock: socket.socket) -> None:
    runner = await start(app, sock)
    host, port = sock.getsockname()[:2]
    log.info("listening on http://%s:%d", f"[{host}]" if ":" in host else host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_server(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` until interrupted: uvloop's event loop when it is installed, INFO logging,
    the access log the settings ask for. The port is bound first: a busy one raises
    :class:`PortUnavailable` before anything else starts."""
    sock = bind(host, port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    serve_socket(app, sock)


def serve_socket(app: web.Application, sock: socket.socket) -> None:
    """Serve ``app`` on a bound socket until SIGTERM or SIGINT; the socket is closed after."""
    settings = app.get(SETTINGS)
    if settings is not None and settings.access_log_json and not ACCESS_LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        ACCESS_LOG.addHandler(handler)
        ACCESS_LOG.propagate = False
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, sock))
    try:
        loop.add_signal_handler(signal.SIGTERM, main.cancel)  # SIGTERM: shut down as on Ctrl-C
        loop.run_until_complete(main)
    except (KeyboardInterrupt, asyncio.CancelledError):
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
            loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        ACCESS_BUFFER.flush()
        sock.close()


__all__ = [
    "ACCESS_BUFFER",
    "JsonErrorRunner",
    "LeanAccessLogger",
    "PortUnavailable",
    "bind",
    "run_server",
    "serve_socket",
    "start",
]
