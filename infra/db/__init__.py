"""The audit store (DESIGN §5): the append-only ``reconciliation_audit`` table on SQLite or
PostgreSQL, its Alembic migrations, and the repository that writes and reads reports.

Nothing here connects at import time: build an engine with :func:`create_audit_engine`, call
:func:`ensure_schema`, then use :class:`AuditRepository`.
"""

from infra.db.engine import create_audit_engine
from infra.db.errors import AuditStoreError, SchemaNotReady
from infra.db.migrate import downgrade, ensure_schema, upgrade
from infra.db.repository import AuditRepository

__all__ = [
    "AuditRepository",
    "AuditStoreError",
    "SchemaNotReady",
    "create_audit_engine",
    "downgrade",
    "ensure_schema",
    "upgrade",
]
