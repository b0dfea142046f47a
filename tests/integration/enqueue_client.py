"""Another service enqueuing recon's tasks by name: celery and the standard library, nothing else.

``tests/integration/test_enqueue_by_name.py`` runs it as::

    python -I -S enqueue_client.py --site-packages DIR --broker URL --backend URL \\
        --account ACCOUNT_ID --exchange NAME

``-I -S``: no current folder, no ``PYTHONPATH``, no ``.pth`` files on the path, so recon (an
editable install, found through a ``.pth`` hook) cannot be imported even by accident; only
``DIR`` (where celery is installed) is added. It sends each task of DESIGN §6 by name with
keyword arguments, waits for each result, sends one bad payload, and prints one JSON document:
``{"<task>": {"id": …, "result": …}, …, "bad_payload": {…}, "recon_modules": […],
"recon_importable": […]}`` (the last two must be empty).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from typing import Any

#: recon's top-level packages and modules: none may be loaded, nor even findable.
RECON_TOP_LEVEL = ("app", "celeryconfig", "cli", "domain", "infra", "workers")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site-packages", required=True, help="where celery is installed")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--account", required=True, help="an account id of the roster")
    parser.add_argument("--exchange", required=True, help="a venue of the roster")
    parser.add_argument("--timeout", type=float, default=30.0)
    return parser.parse_args(argv)


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    """Enqueue every task by name and collect the results."""
    from celery import Celery  # noqa: PLC0415 - importable only once the path is set

    app = Celery("another-service", set_as_current=False)
    app.conf.update(
        broker_url=arguments.broker,
        result_backend=arguments.backend,
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )
    out: dict[str, Any] = {}

    def call(name: str, **kwargs: Any) -> dict[str, Any]:
        result = app.send_task(name, kwargs=kwargs)
        return {"id": result.id, "result": result.get(timeout=arguments.timeout, interval=0.05)}

    try:
        out["recon.reconcile_account"] = call(
            "recon.reconcile_account", account_id=arguments.account
        )
        out["recon.reconcile_exchange"] = call(
            "recon.reconcile_exchange", exchange=arguments.exchange
        )
        out["recon.reconcile_all"] = call("recon.reconcile_all")
        out["recon.get_history"] = call("recon.get_history", account_id=arguments.account, limit=10)
        bad = app.send_task("recon.reconcile_account", kwargs={"account_id": 42})
        try:
            value = bad.get(timeout=arguments.timeout, interval=0.05)
        except Exception as error:  # whatever the worker raised, report it
            out["bad_payload"] = {
                "id": bad.id,
                "state": bad.state,
                "type": type(error).__name__,
                "message": str(error),
            }
        else:
            out["bad_payload"] = {"id": bad.id, "state": bad.state, "unexpected_result": value}
    finally:
        app.close()
    return out


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    sys.path.append(arguments.site_packages)
    out = run(arguments)
    out["recon_modules"] = sorted(
        name for name in sys.modules if name.split(".")[0] in RECON_TOP_LEVEL
    )
    out["recon_importable"] = [
        name for name in RECON_TOP_LEVEL if importlib.util.find_spec(name) is not None
    ]
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
