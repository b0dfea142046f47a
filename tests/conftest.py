"""Shared fixtures: throwaway databases (a SQLite file per test, PostgreSQL databases on demand).

PostgreSQL is looked for on 127.0.0.1:5432 with trust authentication, as user ``postgres``
and then as the current user. When it is unreachable its tests skip, except on CI
(``CI=true``), where they fail: CI must not pass by skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bench.harness import POSTGRES_HOST, POSTGRES_PORT, ServiceUnavailable, postgres_admin


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of a SQLite file (not yet created) in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'audit.db'}"


def _postgres_admin() -> tuple[str, str]:
    """The conninfo of a reachable server's ``postgres`` database and its user, or skip/fail."""
    try:
        return postgres_admin()
    except ServiceUnavailable as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))


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
