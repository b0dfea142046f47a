"""Venue clients: each turns one venue account's balance API into ``{asset: Decimal}``."""
