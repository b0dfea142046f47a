"""Prometheus metrics of reconciliation cycles (the seed's figures)."""
