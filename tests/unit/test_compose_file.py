"""docker-compose.yml, Dockerfile, .dockerignore and deploy/roster.toml, checked without Docker.

No Docker engine runs here or on CI, so the deployment is right by construction and by these
tests: the compose file is validated against the official Compose Specification JSON schema
(vendored, and refreshed each release, by the PyPI package ``check-jsonschema``, a dev
dependency), before and after Compose's variable interpolation; then the facts a schema cannot
state are asserted: one beat, scalable workers, the migrate gate, healthchecks, the shared
RECONCILIATION_* environment, no literal secret, and that every file the services and the roster
name is copied into the image. Without the package the schema tests skip, except on CI
(``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema.validators import validator_for

from infra.config import FileBookConfig, load_roster, load_settings
from infra.config.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ROSTER = ROOT / "deploy" / "roster.toml"
BUILTIN_ROSTER = ROOT / "infra" / "sandbox" / "data" / "roster.toml"
#: Where the Dockerfile puts the repository in the image.
IMAGE_ROOT = "/app"

SCHEMA_PACKAGE = "check-jsonschema"
SCHEMA_RESOURCE = ("check_jsonschema.builtin_schemas.vendor", "compose-spec.json")

#: The database password's default: documented in the compose file as fit for a laptop only.
LOCAL_ONLY_PASSWORD = "recon-local-only"
PASSWORD_DEFAULT = "${POSTGRES_PASSWORD:-" + LOCAL_ONLY_PASSWORD + "}"

SERVICES = {"postgres", "redis", "migrate", "worker", "beat", "flower", "sandbox"}
RECON_SERVICES = {"migrate", "worker", "beat", "flower", "sandbox"}
HEALTHCHECKED = {"postgres", "redis", "worker", "flower", "sandbox"}
EXPECTED_URLS = {
    "RECONCILIATION_BROKER_URL": "redis://redis:6379/0",
    "RECONCILIATION_RESULT_BACKEND": "redis://redis:6379/1",
    "RECONCILIATION_DATABASE_URL": (
        f"postgresql+psycopg://recon:{LOCAL_ONLY_PASSWORD}@postgres:5432/recon"
    ),
    "RECONCILIATION_ACCOUNTS_FILE": f"{IMAGE_ROOT}/deploy/roster.toml",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|AUTH|CREDENTIAL", re.IGNORECASE)


# --- Compose variable interpolation (the spec's subset: $$, $VAR, ${VAR}, ${VAR<op>arg}) ---------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class Interpolation:
    """Compose's interpolation of one file's values with ``env``; records unset bare variables."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.unset: list[str] = []

    def text(self, text: str) -> str:
        """``text`` with every variable substituted and ``$$`` unescaped."""
        result, _ = self._expand(text, 0, inside_braces=False)
        return result

    def value(self, value: Any) -> Any:
        """Every string value of a YAML tree interpolated (keys are not, as in Compose)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value

    def _expand(self, text: str, index: int, *, inside_braces: bool) -> tuple[str, int]:
        parts: list[str] = []
        while index < len(text):
            char = text[index]
            if inside_braces and char == "}":
                return "".join(parts), index
            if char != "$":
                parts.append(char)
                index += 1
            elif text.startswith("$$", index):
                parts.append("$")
                index += 2
            elif text.startswith("${", index):
                substituted, index = self._braced(text, index + 2)
                parts.append(substituted)
            elif name := _NAME.match(text, index + 1):
                parts.append(self._lookup(name.group()))
                index = name.end()
            else:
                parts.append(char)
                index += 1
        if inside_braces:
            raise ValueError(f"unclosed ${{ in {text!r}")
        return "".join(parts), index

    def _braced(self, text: str, index: int) -> tuple[str, int]:
        name_match = _NAME.match(text, index)
        if name_match is None:
            raise ValueError(f"invalid variable name in {text!r}")
        name, index = name_match.group(), name_match.end()
        operator = next((op for op in _OPERATORS if text.startswith(op, index)), "")
        argument = ""
        if operator:
            argument, index = self._expand(text, index + len(operator), inside_braces=True)
        if not text.startswith("}", index):
            raise ValueError(f"unclosed ${{ in {text!r}")
        value = self.env.get(name)
        if operator == "":
            return self._lookup(name), index + 1
        if operator in (":?", "?"):
            if value is None or (operator == ":?" and not value):
                raise ValueError(f"{name}: {argument}")
            return value, index + 1
        is_set = bool(value) if operator.startswith(":") else value is not None
        if operator.endswith("-"):
            return (value if is_set and value is not None else argument), index + 1
        return (argument if is_set else ""), index + 1

    def _lookup(self, name: str) -> str:
        if name not in self.env:
            self.unset.append(name)
        return self.env.get(name, "")


def test_interpolation_follows_the_compose_spec() -> None:
    """The test's interpolation does what the Compose Specification's examples say."""
    env = {"SET": "value", "EMPTY": ""}
    cases = {
        "$$SET and $${SET}": "$SET and ${SET}",
        "$SET/${SET}": "value/value",
        "${EMPTY:-fallback}|${EMPTY-fallback}": "fallback|",
        "${UNSET:-a}|${UNSET-b}": "a|b",
        "${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}": "alt||alt",
        "${UNSET:-${SET}}|${UNSET:-${ALSO_UNSET:-deep}}": "value|deep",
        "celery@$$HOSTNAME": "celery@$HOSTNAME",
    }
    for raw, expected in cases.items():
        assert Interpolation(env).text(raw) == expected, raw
    with pytest.raises(ValueError, match="needed"):
        Interpolation(env).text("${UNSET:?needed}")


# --- the files --------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as YAML (anchors and ``<<`` merge keys resolved), not interpolated."""
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def interpolated(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Compose sees it with ``env`` as the shell (default: an empty one):
    values interpolated, and an environment entry without a value taken from the shell when set
    there (it stays None, i.e. unset in the container, otherwise)."""
    shell = env or {}
    result = Interpolation(shell).value(load_compose())
    assert isinstance(result, dict)
    environments = [result["x-recon-env"]]
    environments += [service.get("environment", {}) for service in result["services"].values()]
    for environment in environments:
        for key, value in environment.items():
            if value is None and key in shell:
                environment[key] = shell[key]
    return result


def argv(command: str | list[str]) -> list[str]:
    """A service's command as an argument vector (a string is split as Compose splits it)."""
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Dependency → condition (the short list form means ``service_started``)."""
    raw = service.get("depends_on", {})
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in raw.items()}


def compose_schema() -> tuple[dict[str, Any], str]:
    """The Compose Specification schema that check-jsonschema ships, with the package's version.

    Absent package: skip, or fail on CI, where a skipped validation would pass silently.
    """
    if find_spec(SCHEMA_RESOURCE[0].split(".")[0]) is None:
        message = (
            f"the Compose Specification schema comes from the PyPI package {SCHEMA_PACKAGE}"
            " (a dev dependency): `./dev test` installs it"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    text = resources.files(SCHEMA_RESOURCE[0]).joinpath(SCHEMA_RESOURCE[1]).read_text("utf-8")
    schema = json.loads(text)
    assert isinstance(schema, dict)
    try:
        package_version = version(SCHEMA_PACKAGE)
    except PackageNotFoundError:  # pragma: no cover - importable but not installed
        package_version = "unknown"
    return schema, package_version


def schema_errors(document: Mapping[str, Any]) -> list[str]:
    """Every violation of the Compose Specification in ``document``, one readable line each."""
    schema, package_version = compose_schema()
    validator_class = validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        f" (schema of {SCHEMA_PACKAGE} {package_version})"
        for error in validator.iter_errors(document)
    ]


# --- the Compose Specification ----------------------------------------------------------------


def test_schema_is_the_compose_specification() -> None:
    """The schema used is the Compose Specification, in a draft jsonschema implements."""
    schema, _ = compose_schema()
    assert schema.get("title") == "Compose Specification"
    assert schema.get("$id") == "compose_spec.json"
    # the draft the schema declares is the one it is checked with (not a fallback default)
    meta_schema_id = validator_for(schema).META_SCHEMA["$id"]
    assert meta_schema_id.rstrip("#") == schema["$schema"].rstrip("#")
    assert {"services", "volumes", "name"} <= set(schema["properties"])


def test_compose_file_is_valid_as_written() -> None:
    """docker-compose.yml, before interpolation, follows the Compose Specification."""
    assert schema_errors(load_compose()) == []


@pytest.mark.parametrize(
    "env",
    [
        {},
        {
            "POSTGRES_PASSWORD": "0123abcd",
            "RECON_WORKER_CONCURRENCY": "4",
            "RECON_WORKER_POOL": "prefork",
            "FLOWER_BIND": "0.0.0.0",
            "FLOWER_BASIC_AUTH": "ops:pw",
            "RECONCILIATION_INTERVAL_SECONDS": "30",
        },
    ],
    ids=["defaults", "overrides"],
)
def test_compose_file_is_valid_as_interpolated(env: dict[str, str]) -> None:
    """After Compose's interpolation (defaults, or the documented knobs set), it is still valid,
    and it names no variable without a default, so Compose warns about nothing."""
    interpolation = Interpolation(env)
    document = interpolation.value(load_compose())
    assert schema_errors(document) == []
    assert interpolation.unset == []


def test_schema_validation_is_not_vacuous() -> None:
    """The schema refuses a misspelt key, a bad depends_on condition and a top-level typo."""
    typo = load_compose()
    typo["services"]["worker"]["comand"] = typo["services"]["worker"].pop("command")
    condition = load_compose()
    condition["services"]["worker"]["depends_on"]["migrate"]["condition"] = "service_done"
    top = load_compose()
    top["service"] = top.pop("services")
    for broken in (typo, condition, top):
        assert schema_errors(broken) != []


# --- what the schema cannot say ---------------------------------------------------------------


def test_services_and_no_obsolete_version() -> None:
    """The seven services exist, and the file has no top-level `version` (obsolete in the spec)."""
    document = load_compose()
    assert "version" not in document
    assert set(document["services"]) == SERVICES


def test_exactly_one_beat() -> None:
    """Beat runs as exactly one replica, never scaled, and no other service starts a beat."""
    services = interpolated()["services"]
    beat = services["beat"]
    assert beat["deploy"]["replicas"] == 1
    assert "scale" not in beat
    assert argv(beat["command"])[:4] == ["celery", "-A", "workers", "beat"]
    # The schedule file goes where the non-root user may write (not /app, which root owns).
    command = argv(beat["command"])
    assert command[command.index("--schedule") + 1].startswith("/tmp/")
    for name, service in services.items():
        if name != "beat":
            assert "beat" not in argv(service.get("command", [])), name
            assert "-B" not in argv(service.get("command", [])), name


def test_worker_scales() -> None:
    """Workers scale with `--scale worker=N`: no fixed name, host port or hostname; events on."""
    for name, service in interpolated()["services"].items():
        assert "container_name" not in service, name
    worker = interpolated()["services"]["worker"]
    assert "ports" not in worker
    assert "hostname" not in worker  # each replica's Celery node name is its own container's
    assert "scale" not in worker
    assert worker.get("deploy", {}).get("replicas") is None
    command = argv(worker["command"])
    assert command[:4] == ["celery", "-A", "workers", "worker"]
    assert "-E" in command  # task events for Flower


def test_worker_pool_is_configurable_with_a_threads_default() -> None:
    """The pool and concurrency default to threads × 16 and follow the documented variables."""
    default = argv(interpolated()["services"]["worker"]["command"])
    assert " ".join(default).endswith("--pool threads --concurrency 16")
    tuned = interpolated({"RECON_WORKER_POOL": "prefork", "RECON_WORKER_CONCURRENCY": "4"})
    assert " ".join(argv(tuned["services"]["worker"]["command"])).endswith(
        "--pool prefork --concurrency 4"
    )


def test_recon_services_run_recon_or_the_celery_app() -> None:
    """Each recon service runs `recon …` or `celery -A workers …` from the one recon image."""
    services = interpolated()["services"]
    images = {services[name]["image"] for name in RECON_SERVICES}
    assert len(images) == 1
    for name in RECON_SERVICES:
        service = services[name]
        assert service["build"]["context"] == "."
        command = argv(service["command"])
        assert command[0] == "recon" or command[:3] == ["celery", "-A", "workers"], name
    for name in SERVICES - RECON_SERVICES:
        assert "build" not in services[name], name


def test_dependencies_exist_and_can_be_met() -> None:
    """Every depends_on names a service; a `service_healthy` wait is on one with a healthcheck."""
    services = interpolated()["services"]
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown {target}"
            assert target != name
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health"


def test_migrate_is_one_shot_and_gates_the_celery_services() -> None:
    """migrate upgrades once after Postgres is healthy; worker and beat start after it succeeded."""
    services = interpolated()["services"]
    migrate = services["migrate"]
    assert argv(migrate["command"]) == ["recon", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert "healthcheck" not in migrate
    assert depends_on(migrate) == {"postgres": "service_healthy"}
    for name in ("worker", "beat"):
        needs = depends_on(services[name])
        assert needs["migrate"] == "service_completed_successfully", name
        assert needs["redis"] == "service_healthy", name
    assert depends_on(services["flower"])["redis"] == "service_healthy"


def test_long_running_services_restart_and_are_healthchecked() -> None:
    """The five long-running services' healthchecks are live; all but migrate restart."""
    services = interpolated()["services"]
    for name in HEALTHCHECKED:
        check = services[name].get("healthcheck")
        assert check, name
        assert not check.get("disable", False), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
    for name in SERVICES - {"migrate"}:
        assert services[name]["restart"] == "unless-stopped", name


def test_healthcheck_commands_are_sound() -> None:
    """Python healthchecks compile; the worker pings its own node; Postgres is checked over TCP."""
    services = interpolated()["services"]
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test", [])
        if test[:3] == ["CMD", "python", "-c"]:
            compile(test[3], f"<{name} healthcheck>", "exec")
    worker_check = services["worker"]["healthcheck"]["test"]
    assert worker_check[0] == "CMD-SHELL"
    assert "celery -A workers inspect ping --destination celery@$HOSTNAME" in worker_check[1]
    assert "127.0.0.1:5555/healthcheck" in " ".join(services["flower"]["healthcheck"]["test"])
    postgres_check = services["postgres"]["healthcheck"]["test"]
    assert postgres_check[:2] == ["CMD", "pg_isready"]
    assert "127.0.0.1" in postgres_check
    assert services["redis"]["healthcheck"]["test"][1].startswith("redis-cli ping")


def test_only_flower_is_published_and_on_localhost_by_default() -> None:
    """Flower's 5555 is the one published port, bound to 127.0.0.1 unless FLOWER_BIND says."""
    services = interpolated()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"flower"}
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert interpolated({"FLOWER_BIND": "0.0.0.0"})["services"]["flower"]["ports"] == [
        "0.0.0.0:5555:5555"
    ]
    command = argv(services["flower"]["command"])
    assert command[:4] == ["celery", "-A", "workers", "flower"]
    assert "--port=5555" in command


def test_sandbox_serves_the_built_in_scenario_on_the_roster_port() -> None:
    """The sandbox listens on 0.0.0.0:9000 with the scenario file the image carries."""
    command = argv(interpolated()["services"]["sandbox"]["command"])
    assert command[:2] == ["recon", "sandbox"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "9000"
    scenario = command[command.index("--scenario") + 1]
    assert scenario == f"{IMAGE_ROOT}/infra/sandbox/data/scenario.toml"


# --- environment and secrets ------------------------------------------------------------------


def test_every_recon_service_shares_the_recon_env_anchor() -> None:
    """One `x-recon-env` anchor is every recon service's environment (Flower adds its own auth)."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "x-recon-env: &recon-env" in text
    document = load_compose()
    anchor = document["x-recon-env"]
    for name in RECON_SERVICES:
        environment = document["services"][name]["environment"]
        extra = set(environment) - set(anchor)
        assert {key: environment[key] for key in anchor} == anchor, name
        assert extra <= ({"FLOWER_BASIC_AUTH"} if name == "flower" else set()), name


def test_env_anchor_has_the_four_urls_and_every_setting() -> None:
    """The anchor defaults the four RECONCILIATION_* URLs to the compose services and names
    every recon setting (DESIGN §2), so each can be set from the shell or .env."""
    anchor = interpolated()["x-recon-env"]
    for variable, url in EXPECTED_URLS.items():
        assert anchor[variable] == url
    every_setting = {env_name(field) for field in Settings.model_fields}
    assert every_setting <= set(anchor)
    assert {key for key in anchor if not key.startswith("RECONCILIATION_")} == set()


def test_env_anchor_is_a_valid_recon_configuration() -> None:
    """recon's own settings loader accepts the services' environment, defaults or overrides."""
    for env, interval in (({}, 60), ({"RECONCILIATION_INTERVAL_SECONDS": "30"}, 30)):
        anchor = interpolated(env)["x-recon-env"]
        settings = load_settings({k: str(v) for k, v in anchor.items() if v is not None})
        assert settings.broker_url == EXPECTED_URLS["RECONCILIATION_BROKER_URL"]
        assert settings.result_backend == EXPECTED_URLS["RECONCILIATION_RESULT_BACKEND"]
        assert settings.database_url == EXPECTED_URLS["RECONCILIATION_DATABASE_URL"]
        assert settings.accounts_path == Path(EXPECTED_URLS["RECONCILIATION_ACCOUNTS_FILE"])
        assert settings.interval_seconds == interval


def test_database_password_has_one_source() -> None:
    """POSTGRES_PASSWORD sets both the server's password and the workers' database URL."""
    services = interpolated({"POSTGRES_PASSWORD": "s3cr3tvalue"})["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cr3tvalue"
    for name in RECON_SERVICES:
        url = services[name]["environment"]["RECONCILIATION_DATABASE_URL"]
        assert url == "postgresql+psycopg://recon:s3cr3tvalue@postgres:5432/recon", name


_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def _strings(value: Any, found: list[str]) -> None:
    """Every string value (not key) of a YAML tree, appended to ``found``."""
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, found)
    elif isinstance(value, list):
        for item in value:
            _strings(item, found)


def _environments(document: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    yield from (("x-recon-env", key, value) for key, value in document["x-recon-env"].items())
    for name, service in document["services"].items():
        for key, value in service.get("environment", {}).items():
            yield name, key, value


def test_no_literal_secret_in_the_environment() -> None:
    """A secret-named variable is passed through or interpolated, never written; the one literal
    password is the documented local-only default of POSTGRES_PASSWORD."""
    strings: list[str] = []
    _strings(load_compose(), strings)
    for text in strings:
        assert LOCAL_ONLY_PASSWORD not in text.replace(PASSWORD_DEFAULT, ""), text
    for where, key, value in _environments(load_compose()):
        if SECRET_NAME.search(key):
            assert value is None or value == PASSWORD_DEFAULT or _VARIABLE.fullmatch(value), (
                f"{where}: {key} holds a literal value"
            )
    for where, key, value in _environments(interpolated()):
        credentials = re.match(r"[a-z0-9+.-]+://([^@/]*)@", value) if value else None
        if credentials is not None:
            assert credentials.group(1) == f"recon:{LOCAL_ONLY_PASSWORD}", f"{where}: {key}"


# --- the image: Dockerfile and .dockerignore --------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def dockerignore_patterns() -> list[str]:
    """The .dockerignore rules in order (comments and blank lines dropped)."""
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _pattern(rule: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over /-paths."""
    out: list[str] = []
    index = 0
    rule = posixpath.normpath(rule.strip("/"))
    while index < len(rule):
        if rule.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif rule.startswith("**", index):
            out.append(".*")
            index += 2
        elif rule[index] == "*":
            out.append("[^/]*")
            index += 1
        elif rule[index] == "?":
            out.append("[^/]")
            index += 1
        elif rule[index] == "[":
            end = rule.index("]", index)
            out.append(rule[index : end + 1])
            index = end + 1
        else:
            out.append(re.escape(rule[index]))
            index += 1
    return re.compile("".join(out) + r"\Z")


def ignored(relative: str) -> bool:
    """Whether .dockerignore keeps ``relative`` (a repo path) out of the build context."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: count + 1]) for count in range(len(parts))]
    excluded = False
    for rule in dockerignore_patterns():
        negated = rule.startswith("!")
        pattern = _pattern(rule.removeprefix("!"))
        if any(pattern.match(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def in_image(image_path: str) -> Path:
    """The repo file the image has at ``image_path`` (under /app); asserts it is copied there."""
    normalized = posixpath.normpath(image_path)
    assert normalized.startswith(IMAGE_ROOT + "/"), f"{image_path} is outside {IMAGE_ROOT}"
    relative = normalized.removeprefix(IMAGE_ROOT + "/")
    repo_path = ROOT / relative
    assert repo_path.is_file(), f"{image_path}: no {relative} in the repository"
    assert not ignored(relative), f"{image_path}: .dockerignore leaves {relative} out"
    return repo_path


def test_dockerfile_builds_a_non_root_python_311_image_of_the_repo() -> None:
    """python:3.11-slim, WORKDIR /app, the whole context copied there, `pip install` of it, and a
    non-root user for everything that runs."""
    instructions = dockerfile_instructions()
    args: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            args[name] = default
    (base,) = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert Interpolation(args).text(base) == "python:3.11-slim"
    assert ("WORKDIR", IMAGE_ROOT) in instructions
    assert ("COPY", f". {IMAGE_ROOT}") in instructions
    copy_index = instructions.index(("COPY", f". {IMAGE_ROOT}"))
    installs = [
        index
        for index, (keyword, arguments) in enumerate(instructions)
        if keyword == "RUN" and re.search(rf"pip install (--\S+ )*{IMAGE_ROOT}\b", arguments)
    ]
    assert installs
    assert installs[-1] > copy_index
    users = [index for index, (keyword, _) in enumerate(instructions) if keyword == "USER"]
    assert users, "the image must not run as root"
    user = instructions[users[-1]][1].partition(":")[0]
    assert user not in ("root", "0")
    assert all(keyword != "RUN" for keyword, _ in instructions[users[-1] :])


def test_dockerfile_bakes_in_no_secret() -> None:
    """No ENV or ARG of the Dockerfile names a password, secret, token or key."""
    for keyword, arguments in dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", arguments) or [arguments.split()[0]]
            assert not any(SECRET_NAME.search(name) for name in names), arguments


def test_dockerignore_keeps_the_package_and_drops_local_state() -> None:
    """The build context has the package, its metadata and deploy/, and no venv, VCS, caches,
    local databases or .env files."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = project["tool"]["setuptools"]
    packages = [pattern.rstrip("*") for pattern in setuptools["packages"]["find"]["include"]]
    kept = [
        "pyproject.toml",
        "README.md",
        "deploy/roster.toml",
        "infra/sandbox/data/scenario.toml",
        *(f"{module}.py" for module in setuptools["py-modules"]),
        *(f"{package}/__init__.py" for package in packages),
    ]
    assert "workers/__init__.py" in kept
    assert "celeryconfig.py" in kept
    for relative in kept:
        assert (ROOT / relative).is_file(), relative
        assert not ignored(relative), relative
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "recon.db",
        "infra/db/__pycache__/models.cpython-311.pyc",
        "recon.egg-info/PKG-INFO",
        ".env",
        "deploy/.env",
        ".mypy_cache/3.11/x.json",
        "tests/unit/test_compose_file.py",
    ):
        assert ignored(dropped), dropped


def test_files_the_services_name_are_in_the_image() -> None:
    """Every /app/… path in the compose file (roster, scenario) is a repo file copied there, and
    so is every key file the scenario names."""
    strings: list[str] = []
    _strings(interpolated(), strings)
    named = [path for text in strings for path in re.findall(rf"{IMAGE_ROOT}/[\w./-]+", text)]
    scenario = f"{IMAGE_ROOT}/infra/sandbox/data/scenario.toml"
    assert {f"{IMAGE_ROOT}/deploy/roster.toml", scenario} <= set(named)
    for path in named:
        in_image(path)
    accounts = tomllib.loads(in_image(scenario).read_text(encoding="utf-8"))["accounts"]
    key_files = [account["public_key_file"] for account in accounts if "public_key_file" in account]
    assert key_files
    for key_file in key_files:
        in_image(posixpath.join(posixpath.dirname(scenario), key_file))


# --- deploy/roster.toml -----------------------------------------------------------------------


def test_compose_roster_loads_and_points_at_the_sandbox_service() -> None:
    """deploy/roster.toml is a valid accounts file: the built-in roster's accounts, policy and
    prices, every account at http://sandbox:9000."""
    settings = load_settings({})
    roster = load_roster(ROSTER, settings)
    builtin = load_roster(BUILTIN_ROSTER, settings)
    assert [account.id for account in roster.accounts] == [a.id for a in builtin.accounts]
    assert roster.policy == builtin.policy
    assert roster.prices == builtin.prices
    for account, original in zip(roster.accounts, builtin.accounts, strict=True):
        assert account.base_url == "http://sandbox:9000"
        assert (account.exchange, account.address, account.subaccount) == (
            original.exchange,
            original.address,
            original.subaccount,
        )


def test_compose_roster_references_resolve_in_the_repo_and_in_the_image() -> None:
    """Every `file:` secret and the book resolve from deploy/ in the repository, and the same
    relative paths from /app/deploy in the image land on files the Dockerfile copies."""
    roster = load_roster(ROSTER, load_settings({}))
    roster.check_secrets({})  # every file: reference is readable from the checkout
    image_roster_dir = posixpath.dirname(EXPECTED_URLS["RECONCILIATION_ACCOUNTS_FILE"])
    references: list[str] = []
    for account in roster.accounts:
        for ref in (account.api_key, account.api_secret):
            if ref is not None:
                assert ref.scheme == "file", f"{account.id}: the sandbox keys are files"
                references.append(ref.target)
    assert len(references) == 2 * sum(1 for a in roster.accounts if a.api_key is not None)
    assert len(references) >= 4
    assert isinstance(roster.book, FileBookConfig)
    assert roster.book.path.is_file()
    references.append(os.path.relpath(roster.book.path, ROSTER.parent.resolve()))
    for reference in references:
        in_repo = (ROSTER.parent / reference).resolve()
        assert in_repo.is_file(), reference
        image_path = posixpath.join(image_roster_dir, reference)
        assert in_image(image_path) == in_repo
