"""Use cases (one reconciliation cycle), the composition root and the CLI."""
