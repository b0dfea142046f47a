"""Shared fixtures: throwaway databases (a SQLite file per test, PostgreSQL databases on demand).

PostgreSQL is looked for on 127.0.0.1:5432 with trust authentication, as user ``postgres``
and then as the current user. When it is unreachable its tests skip, except on CI
(``CI=true``), where they fail: CI must not pass by skipping them.
"""

from __future__ import annotations

import getpass
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of a SQLite file (not yet created) in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'audit.db'}"


def _postgres_admin() -> tuple[str, str]:
    """The conninfo of a reachable server's ``postgres`` database and its user, or skip/fail."""
    reasons = []
    for user in dict.fromkeys(("postgres", getpass.getuser())):
        conninfo = make_conninfo(
            host=POSTGRES_HOST, port=POSTGRES_PORT, user=user, dbname="postgres", connect_timeout=3
        )
        try:
            with psycopg.connect(conninfo):
                return conninfo, user
        except psycopg.OperationalError as exc:
            reasons.append(f"as {user}: {str(exc).strip()}")
    message = f"PostgreSQL not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}: " + "; ".join(reasons)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[Callable[[], str]]:
    """A factory of empty throwaway databases (``recon_test_<hex>``), all dropped at the end."""
    admin, user = _postgres_admin()
    created: list[str] = []

    def create() -> str:
        name = f"recon_test_{uuid.uuid4().hex}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return f"postgresql+psycopg://{user}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"

    yield create
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in created:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
