"""The sandbox venue (DESIGN §7): the venues' real API shapes served from a scenario file.

``SandboxServer(scenario_or_path)`` runs it on a background thread (tests, embedded default);
``serve(path, host, port)`` runs it in the foreground (``recon sandbox``). ``DEFAULT_SCENARIO``
and ``DEFAULT_ROSTER`` are the built-in demo venue and the accounts file that points at it.
"""

from infra.sandbox.app import DEFAULT_VENUES, create_app
from infra.sandbox.scenario import (
    Fault,
    FaultKind,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
)
from infra.sandbox.server import (
    DATA_DIR,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_ROSTER,
    DEFAULT_SCENARIO,
    SandboxServer,
    builtin_scenario_path,
    serve,
)
from infra.sandbox.state import SandboxState, VenueModule

__all__ = [
    "DATA_DIR",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_ROSTER",
    "DEFAULT_SCENARIO",
    "DEFAULT_VENUES",
    "Fault",
    "FaultKind",
    "SandboxServer",
    "SandboxState",
    "Scenario",
    "ScenarioError",
    "VenueModule",
    "builtin_scenario_path",
    "create_app",
    "load_scenario",
    "parse_scenario",
    "serve",
]
