"""``recon db upgrade`` and ``recon reconcile`` against the machine's PostgreSQL, for real."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import create_engine, text

from tests.integration.test_cli_reconcile import DX_0, DX_1, MULTI_BOOK
from tests.support import Desk, desk_fixture  # noqa: F401  (the ``desk`` fixture)

pytestmark = pytest.mark.postgres


def _rows(url: str) -> list[tuple[str, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            result = connection.execute(
                text("SELECT account_id, status FROM reconciliation_audit ORDER BY account_id")
            )
            return [(str(a), str(s)) for a, s in result]
    finally:
        engine.dispose()


def test_reconcile_refuses_an_unmigrated_postgres_and_db_upgrade_fixes_it(
    desk: Desk, postgres_url: Callable[[], str]
) -> None:
    """Unmigrated: exit 6 naming `recon db upgrade`; after `recon db upgrade` the cycle writes."""
    url = postgres_url()
    desk.start(DX_0, DX_1, book=MULTI_BOOK)

    refused = desk.recon("reconcile", "--all", RECONCILIATION_DATABASE_URL=url)
    assert refused.exit_code == 6
    assert "recon db upgrade" in refused.stderr

    upgraded = desk.recon("db", "upgrade", RECONCILIATION_DATABASE_URL=url)
    assert upgraded.exit_code == 0, upgraded.stderr

    result = desk.recon("reconcile", "--all", RECONCILIATION_DATABASE_URL=url)
    assert result.exit_code == 0, result.stderr
    assert _rows(url) == [("dx-0", "WARNING"), ("dx-1", "SUCCESS")]

    history = desk.recon("history", "--json", RECONCILIATION_DATABASE_URL=url)
    assert history.exit_code == 0, history.stderr
    assert '"account_id": "dx-0"' in history.stdout
