"""Adapters: venues, the book, prices, the audit store, settings, the sandbox venue."""
