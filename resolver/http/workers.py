"""``geoweb serve --workers N``: N processes answering on one listening socket.

The socket is bound and the registry loaded and indexed once, in the parent, before the workers
are forked: they share the index's memory copy-on-write (the numpy arrays and GEOS geometries are
never written to, and the parent's objects are frozen out of the collector's way), and port 0
means one port for all. The kernel hands each new connection to one worker. Each worker opens
its own store connection and follows the store as a single server does, so an import by another
process reaches every worker within ``--registry-poll``. The background refresh, mirror syncs and
the ad hoc forwarder run in worker 0 only (``resolver.http.keys.first_worker``).

The parent only waits: SIGTERM or SIGINT stops every worker (SIGTERM, then SIGKILL after
``STOP_TIMEOUT`` seconds) and it exits when all have; a worker that dies stops the others too (the
service does not run on fewer processes than asked without saying so), with exit status 1.
On Linux each worker also asks the kernel to stop it when the parent dies, so none is orphaned.

``/healthz`` and ``/metrics`` answer for the worker that took the connection (``worker.pid`` in
``/healthz`` says which); there is no aggregate across workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import socket
import sys
import time

from resolver.config import Settings
from resolver.http.app import create_app
from resolver.http.keys import PRELOADED, WORKER
from resolver.http.serving import bind, serve_socket
from resolver.runtime import Preloaded, preload

log = logging.getLogger(__name__)

#: Seconds the workers get to finish their requests and close before they are killed.
STOP_TIMEOUT = 20.0
_PR_SET_PDEATHSIG = 1


def worker_count(settings: Settings) -> int:
    """``settings.workers``, or one per core when it is 0."""
    return settings.workers or os.cpu_count() or 1


def serve(settings: Settings) -> None:
    """Serve the HTTP API until interrupted, with :func:`worker_count` processes."""
    count = worker_count(settings)
    sock = bind(settings.host, settings.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if count == 1:
        serve_socket(create_app(settings), sock)
        return
    preloaded = preload(settings)
    # Objects made so far live as long as the process: keep the collector from touching (and so
    # copying) their pages in every worker.
    gc.collect()
    gc.freeze()
    sys.exit(_supervise(settings, sock, preloaded, count))


def _worker(settings: Settings, sock: socket.socket, preloaded: Preloaded, number: int) -> None:
    _die_with_parent()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    app = create_app(settings)
    app[PRELOADED] = preloaded
    app[WORKER] = (number, worker_count(settings))
    serve_socket(app, sock)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies (elsewhere: nothing)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _supervise(settings: Settings, sock: socket.socket, preloaded: Preloaded, count: int) -> int:
    """Fork ``count`` workers and wait for them; the exit status of ``geoweb serve``."""
    children: dict[int, int] = {}
    stopping: list[float] = []  # when the stop began (empty: serving)

    def stop(*_: object) -> None:
        if not stopping:
            stopping.append(time.monotonic())
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for number in range(count):
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the parent's code
            children.clear()  # a signal before the worker's own handlers must not reach siblings
            status = 0
            try:
                _worker(settings, sock, preloaded, number)
            except KeyboardInterrupt:
                pass
            except BaseException:
                log.exception("worker %d failed", number)
                status = 1
            finally:
                logging.shutdown()
                os._exit(status)
        children[pid] = number
    log.info("%d workers on one socket: pids %s", count, " ".join(map(str, children)))
    sock.close()  # the workers hold it
    status = 0
    while children:
        try:
            pid, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if stopping and time.monotonic() - stopping[0] > STOP_TIMEOUT:
                for left in children:
                    log.error("worker pid %d did not stop in %g s: killed", left, STOP_TIMEOUT)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(left, signal.SIGKILL)
                stopping[0] = float("inf")  # killed once; now only reap
            time.sleep(0.05)
            continue
        number = children.pop(pid)
        if not stopping:
            log.error(
                "worker %d (pid %d) exited with status %d; stopping the others",
                number,
                pid,
                os.waitstatus_to_exitcode(code),
            )
            status = 1
            stop()
    return status


__all__ = ["STOP_TIMEOUT", "serve", "worker_count"]
