"""The Celery app. Its configuration (``celeryconfig``) is read from the environment when a
worker, beat or Flower starts; creating the app object connects nothing."""

from __future__ import annotations

from celery import Celery

from workers import logs

app = Celery("recon", include=["workers.tasks"])
app.config_from_object("celeryconfig")

__all__ = ["app", "logs"]
