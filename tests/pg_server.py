"""A real PostgreSQL server for the store tests (Debian package ``postgresql``).

:class:`PgCluster` creates one throwaway cluster per test session: ``initdb`` into a temporary
directory, ``pg_ctl`` starting it on a free ``127.0.0.1`` port with its unix socket in that
directory, trust authentication and no fsync (the data is thrown away). Each test gets a schema
of its own in one shared database (``pg_url``: the schema is the connections' ``search_path``; it
takes milliseconds where ``CREATE DATABASE`` takes a few hundred), or, when it needs one, a whole
database (``pg_database``); either is dropped after the test. PostgreSQL refuses to run as root,
so as root the server's programs run as the ``postgres`` user through ``runuser``.

The server's time zone is deliberately not UTC: timestamps must come back as the same instants
whatever zone the server reports them in.

When PostgreSQL or psycopg is not installed, :func:`require_postgres` skips the test with a
one-line reason, or fails it when ``CI=true`` (CI installs both: see ``.ci/run``).
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
SHARED_DATABASE = "geoweb_tests"  # where the per-test schemas live
SERVER_TIMEZONE = "Asia/Kolkata"  # UTC+05:30: a naive or mislabelled timestamp shows at once


def postgres_bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: on PATH, or Debian's newest /usr/lib/postgresql/N."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    versions = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").exists() and (p / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def _missing() -> str | None:
    if postgres_bindir() is None:
        return (
            "PostgreSQL not found: install it (apt-get install postgresql) to run the "
            "PostgreSQL store tests"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed: pip install -e '.[test]' to run the PostgreSQL store tests"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return f"PostgreSQL refuses to run as root and there is no {SUPERUSER!r} user"
    return None


def require_postgres() -> Path:
    """The PostgreSQL programs' folder, or skip (locally) / fail (CI) with one line saying why."""
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    bindir = postgres_bindir()
    assert bindir is not None
    return bindir


def postgres_version() -> str:
    """For the report header: ``PostgreSQL 15.x (path)`` or why the tests will not run."""
    reason = _missing()
    if reason is not None:
        return reason
    bindir = postgres_bindir()
    assert bindir is not None
    found = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"{found or 'PostgreSQL (version unknown)'} ({bindir})"


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One PostgreSQL server in a temporary directory, listening on ``127.0.0.1:port``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="geoweb-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.running = False
        self._names = itertools.count(1)
        self._admin: dict[str, Any] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command: Sequence[str] = args
        if os.geteuid() == 0:
            command = ["runuser", "-u", SUPERUSER, "--", *args]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )

    def start(self) -> PgCluster:
        """``initdb``, then start the server; retries on another port if one was taken."""
        done = self._run(
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        for _attempt in range(3):
            self.port = _free_tcp_port()
            settings = {
                "listen_addresses": "127.0.0.1",
                "port": str(self.port),
                "unix_socket_directories": str(self.root),
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "timezone": SERVER_TIMEZONE,
            }
            options = " ".join(f"-c {key}={value}" for key, value in settings.items())
            done = self._run(
                str(self.bindir / "pg_ctl"),
                "--pgdata",
                str(self.data),
                "--log",
                str(self.log),
                "--options",
                options,
                "--wait",
                "--timeout",
                "60",
                "start",
            )
            if done.returncode == 0:
                self.running = True
                self.admin().execute(f'CREATE DATABASE "{SHARED_DATABASE}"')
                return self
            if "could not bind" not in self.tail():
                break
        raise RuntimeError(f"PostgreSQL did not start: {self.tail()}")

    def stop(self) -> None:
        """Stop the server and delete its directory."""
        for connection in self._admin.values():
            connection.close()
        self._admin.clear()
        if self.running:
            self._run(str(self.bindir / "pg_ctl"), "--pgdata", str(self.data), "-m", "fast", "stop")
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    def tail(self, lines: int = 10) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def url(self, database: str, *, driver: str = "psycopg") -> str:
        """The SQLAlchemy URL of a database of this server (``driver=""``: a plain URL)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def schema_url(self, schema: str) -> str:
        """The URL of one schema of the shared database: its connections look there first, and
        carry the schema's name as their application name (so they can be ended with it)."""
        query = f"options=-csearch_path%3D{schema}&application_name={schema}"
        return f"{self.url(SHARED_DATABASE)}?{query}"

    def admin(self, database: str = "postgres") -> Any:
        """An autocommit psycopg connection to ``database``, kept for the session."""
        import psycopg

        connection = self._admin.get(database)
        if connection is None or connection.closed:
            connection = self._admin[database] = psycopg.connect(
                host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, autocommit=True
            )
        return connection

    def create_database(self) -> str:
        name = f"geoweb_test_{next(self._names)}"
        self.admin().execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        assert re.fullmatch(r"[a-z0-9_]+", name)
        self.admin().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_schema(self) -> str:
        name = f"geoweb_test_{next(self._names)}"
        self.admin(SHARED_DATABASE).execute(f'CREATE SCHEMA "{name}"')
        return name

    def drop_schema(self, name: str) -> None:
        """End the connections a test left open in the schema (they could hold locks), drop it."""
        assert re.fullmatch(r"[a-z0-9_]+", name)
        admin = self.admin(SHARED_DATABASE)
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        )
        admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's PostgreSQL server (skipped or failed when it cannot run, see above)."""
    cluster = PgCluster(require_postgres())
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def pg_database(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty database of the session's server, for this test only; yields its name."""
    name = pg_cluster.create_database()
    yield name
    pg_cluster.drop_database(name)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The SQLAlchemy URL (``postgresql+psycopg://``) of a fresh, empty schema for this test."""
    schema = pg_cluster.create_schema()
    yield pg_cluster.schema_url(schema)
    pg_cluster.drop_schema(schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on both backends: a new SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    return str(request.getfixturevalue("pg_url"))
