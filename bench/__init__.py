"""recon's benchmark (issue 6): the real Celery pipeline on the sandbox, timed against the
physical floor of each scenario. Run it with ``python -m bench`` (see ``bench/README.md``)."""
