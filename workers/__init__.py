"""recon's Celery app and its thin tasks: ``celery -A workers worker | beat | flower``."""

from workers.app import app

__all__ = ["app"]
