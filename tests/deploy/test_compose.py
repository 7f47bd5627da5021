"""The local Docker stack, checked without a Docker engine and without the Compose plugin.

docker-compose.yml is loaded with yaml.safe_load (anchors and `<<` merge keys applied), its `${VAR...}`
interpolation is resolved as Compose resolves it with none of the variables set (so the shipped defaults are
what is checked), and the result is validated against the official Compose Specification JSON schema, vendored
in tests/deploy/compose-spec.json (source and licence: compose-spec.SOURCE.txt). The structural checks below
then read that same resolved document. When the docker client does have the Compose v2 plugin,
`docker compose config -q` runs as well; when it does not, that extra check is not made (no test is skipped).
The Dockerfiles are checked as text; `docker build --check` runs too, but only when an engine answers.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = Path(__file__).resolve().with_name("compose-spec.json")
BATCH_DOCKERFILE = ROOT / "docker" / "batch.Dockerfile"
AIRFLOW_DOCKERFILE = ROOT / "docker" / "airflow.Dockerfile"
DOCKERFILES = (BATCH_DOCKERFILE, AIRFLOW_DOCKERFILE)

AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
ALL_AIRFLOW = ("airflow-init", *AIRFLOW_SERVICES)

HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"
# Every dependency that matters, with its condition (a service may have more).
EXPECTED_DEPENDS_ON = {
    "aws-init": {"aws": HEALTHY},
    "airflow-init": {"postgres": HEALTHY},
    "airflow-apiserver": {"postgres": HEALTHY, "airflow-init": COMPLETED},
    **{
        name: {"postgres": HEALTHY, "airflow-init": COMPLETED, "airflow-apiserver": HEALTHY, "aws-init": COMPLETED}
        for name in ("airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
    },
}


# ---------------------------------------------------------------------------------------------- interpolation

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_BRACED = re.compile(rf"({_NAME})(?:(:?[-?+])(.*))?", re.DOTALL)
_BARE = re.compile(_NAME)


def _closing_brace(text: str, start: int) -> int:
    """Index of the `}` that closes the `${` whose body starts at `start` (nested `${...}` allowed)."""
    depth, i = 1, start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
        elif text.startswith("${", i):
            depth, i = depth + 1, i + 2
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
            i += 1
        else:
            i += 1
    raise ValueError(f"unterminated ${{ in {text!r}")


def interpolate(text: str, env: Mapping[str, str], unset: list[str] | None = None) -> str:
    """`text` with Compose interpolation applied: `$$` is a literal `$`; `$X` and `${X}` are X's value;
    `${X:-d}` / `${X-d}` default d when X is unset or empty / unset; `${X:?e}` / `${X?e}` are errors then;
    `${X:+a}` / `${X+a}` give a when X is set and non-empty / set. Defaults may nest. A lone `$` stays as it
    is. Names used without a default while unset are appended to `unset` (Compose warns and uses "")."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_substitute(text[i + 2 : end], env, unset))
            i = end + 1
        elif bare := _BARE.match(text, i + 1):
            out.append(_substitute(bare.group(), env, unset))
            i = bare.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _substitute(expression: str, env: Mapping[str, str], unset: list[str] | None) -> str:
    match = _BRACED.fullmatch(expression)
    if match is None:
        raise ValueError(f"invalid interpolation format: ${{{expression}}}")
    name, operator, argument = match.groups()
    value = env.get(name)

    def argument_value() -> str:
        return interpolate(argument, env, unset)

    if operator is None:
        if value is None and unset is not None:
            unset.append(name)
        return value or ""
    if operator == ":-":
        return value if value else argument_value()
    if operator == "-":
        return value if value is not None else argument_value()
    if operator in (":?", "?"):
        if (not value) if operator == ":?" else (value is None):
            raise ValueError(f"required variable {name} is missing a value: {argument_value()}")
        return value or ""
    if operator == ":+":
        return argument_value() if value else ""
    return argument_value() if value is not None else ""  # "+"


def _interpolate_tree(node: Any, env: Mapping[str, str], unset: list[str]) -> Any:
    """Compose interpolates values (strings at any depth), never mapping keys."""
    if isinstance(node, str):
        return interpolate(node, env, unset)
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env, unset) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(item, env, unset) for item in node]
    return node


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("plain", {}, "plain"),
        ("$${HOSTNAME} costs $$5", {"HOSTNAME": "h"}, "${HOSTNAME} costs $5"),
        ("${X}/$X/${X:-d}/${X-d}", {"X": "v"}, "v/v/v/v"),
        ("${X:-d}|${X-d}", {"X": ""}, "d|"),
        ("${X:-d}|${X-d}|${X}", {}, "d|d|"),
        ("${X:-a-b:c=}", {}, "a-b:c="),
        ("${X:-${Y:-inner}}", {}, "inner"),
        ("${X:+set}|${X+set}", {"X": ""}, "|set"),
        ("a $ b $1", {}, "a $ b $1"),
    ],
)
def test_interpolation_resolver(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


def test_interpolation_resolver_errors() -> None:
    with pytest.raises(ValueError, match="required variable X"):
        interpolate("${X:?must be set}", {"X": ""})
    with pytest.raises(ValueError, match="invalid interpolation"):
        interpolate("${not valid}", {})
    with pytest.raises(ValueError, match="unterminated"):
        interpolate("${X", {})


# ---------------------------------------------------------------------------------------------- docker-compose.yml


@functools.cache
def _loaded() -> dict[str, Any]:
    """docker-compose.yml as YAML: anchors, aliases and `<<` merge keys applied, nothing interpolated."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


@functools.cache
def _resolved_and_unset() -> tuple[dict[str, Any], tuple[str, ...]]:
    # An empty environment on purpose: what is checked is the file with its own defaults, whatever the
    # caller's shell or an .env file would override.
    unset: list[str] = []
    return _interpolate_tree(_loaded(), {}, unset), tuple(unset)


@pytest.fixture
def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose resolves it (a fresh copy per test, so tests may mutate it)."""
    return copy.deepcopy(_resolved_and_unset()[0])


@pytest.fixture
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _validator_class(schema: dict[str, Any]) -> type[Any]:
    """The jsonschema validator for the schema's `$schema` (the compose spec writes draft 7's URI as
    https://json-schema.org/draft-07/schema, which jsonschema only knows as http://...#)."""
    uri = schema.get("$schema", "")
    http = uri.replace("https://", "http://", 1)
    for candidate in (uri, f"{uri}#", http, f"{http}#"):
        cls = validator_for({"$schema": candidate}, default=None)
        if cls is not None:
            return cls
    raise AssertionError(f"{SCHEMA_FILE.name}: jsonschema knows no validator for $schema {uri!r}")


@functools.cache
def _schema_validator() -> Any:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = _validator_class(schema)
    cls.check_schema(schema)
    return cls(schema)


def _schema_errors(document: dict[str, Any]) -> list[str]:
    errors = sorted(_schema_validator().iter_errors(document), key=lambda error: list(error.absolute_path))
    # oneOf/anyOf failures: report the branch that came closest.
    return [f"{(best := best_match([error])).json_path}: {best.message}" for error in errors]


def _compose_plugin() -> list[str] | None:
    """`docker compose` when the docker client has the Compose v2 plugin, else None."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        done = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return None
    return [docker, "compose"] if done.returncode == 0 else None


def test_compose_file_is_valid() -> None:
    """Always: the compose spec's JSON schema. Also `docker compose config -q` when the plugin is there."""
    validators = [f"jsonschema {_schema_validator().__class__.__name__} ({SCHEMA_FILE.name})"]
    document, unset = _resolved_and_unset()
    assert not unset, f"docker-compose.yml uses variables with no default (Compose would use an empty string): {sorted(set(unset))}"
    errors = _schema_errors(document)
    assert not errors, "docker-compose.yml does not match the Compose Specification:\n" + "\n".join(errors)

    # What the schema cannot see but Compose rejects: named volumes that are not declared.
    declared = set(document.get("volumes") or {})
    for name, service in document["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":", 1)[0] if ":" in volume else None
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} mounts the undeclared named volume {source!r} (top-level volumes: {sorted(declared)})"

    compose_command = _compose_plugin()
    if compose_command is not None:
        command = [*compose_command, "-f", str(COMPOSE_FILE), "config", "-q"]
        # The caller's COMPOSE_* settings (profiles, extra files, project name) must not change what is checked.
        env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{shlex.join(command)}` did not finish in 60 s", pytrace=False)
        assert done.returncode == 0, f"`{shlex.join(command)}` exited {done.returncode}:\n{done.stderr.strip()}"
        validators.append("docker compose config -q")
    else:
        validators.append("not `docker compose config -q` (no Compose v2 plugin)")
    print(f"\ndocker-compose.yml validated by: {'; '.join(validators)}")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (_set("services.postgres.healthcheck.interval", 5), ("services", "postgres", "healthcheck", "interval")),
        (_set("servces", {"postgres": {"image": "postgres:15"}}), ()),
        (_set("services.airflow-apiserver.healthchek", {"test": ["CMD", "true"]}), ("services", "airflow-apiserver")),
        (_set("services.aws-init.depends_on.aws.condition", "service_ready"), ("services", "aws-init", "depends_on")),
        (_set("services.airflow-scheduler.build.dockerfile", ["docker/airflow.Dockerfile"]), ("services", "airflow-scheduler", "build")),
    ],
    ids=["interval-not-a-string", "unknown-top-level-key", "unknown-service-key", "bad-depends_on-condition", "dockerfile-not-a-string"],
)
def test_schema_validation_rejects_broken_files(
    compose: dict[str, Any], mutate: Callable[[dict[str, Any]], None], where: tuple[str, ...]
) -> None:
    """The schema check is not vacuous: each of these breaks a copy of the real file and must be rejected,
    at (or below) the place that was broken."""
    assert not _schema_errors(compose), "the unbroken file must validate (see test_compose_file_is_valid)"
    mutate(compose)
    with pytest.raises(jsonschema.ValidationError) as raised:
        _schema_validator().validate(compose)
    error = best_match([raised.value])
    path = tuple(error.absolute_path)
    assert path[: len(where)] == where, f"rejected, but at {error.json_path} ({error.message}), not under {where}"


def test_extension_anchor_is_merged_into_every_airflow_service() -> None:
    document = _loaded()
    common = document["x-airflow-common"]
    assert {"build", "image", "environment", "volumes"} <= set(common), f"x-airflow-common lacks keys: {sorted(common)}"
    for name in ALL_AIRFLOW:
        service = document["services"][name]
        assert "<<" not in service, f"{name}: the `<<` merge key was not applied"
        overridden = {"restart"} if name == "airflow-init" else set()
        for key, value in common.items():
            if key not in overridden:
                assert service.get(key) == value, f"{name}.{key} is not the x-airflow-common value"
    # A key a service sets itself wins over the merged one: airflow-init is a one-shot.
    assert common.get("restart") == "unless-stopped" and document["services"]["airflow-init"]["restart"] == "no"


def _build(service: dict[str, Any]) -> dict[str, Any] | None:
    """build in its long form, with the context resolved against the compose file's directory."""
    build = service.get("build")
    if build is None:
        return None
    build = {"context": build} if isinstance(build, str) else dict(build)
    build["context"] = str((COMPOSE_FILE.parent / build.get("context", ".")).resolve())
    build.setdefault("dockerfile", "Dockerfile")
    return build


def _published_ports(service: dict[str, Any]) -> set[tuple[str | None, str]]:
    """(published, target) per port, from the short ("[ip:][published:]target[/proto]") or long syntax."""
    ports: set[tuple[str | None, str]] = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            published = port.get("published")
            ports.add((None if published is None else str(published), str(port["target"])))
            continue
        parts = str(port).split("/", 1)[0].rsplit(":", 2)
        ports.add((parts[-2] if len(parts) >= 2 else None, parts[-1]))
    return ports


def _conditions(service: dict[str, Any]) -> dict[str, str | None]:
    """depends_on as {service: condition}; the short list form means service_started."""
    depends_on = service.get("depends_on") or {}
    if isinstance(depends_on, list):
        return dict.fromkeys(depends_on, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in depends_on.items()}


def _env(service: dict[str, Any]) -> dict[str, str | None]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return {key: None if value is None else str(value) for key, value in environment.items()}


def _has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck") or {}
    raw = check.get("test")
    test: list[str] = ["CMD-SHELL", raw] if isinstance(raw, str) else list(raw or [])  # the string form is CMD-SHELL
    return bool(test) and not check.get("disable") and test[0] != "NONE"


def test_services_exist(services: dict[str, Any]) -> None:
    missing = {"postgres", "aws", "aws-init", "batch-image", *ALL_AIRFLOW} - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}; it has {sorted(services)}"


def test_airflow_services_share_one_image_build(services: dict[str, Any]) -> None:
    builds = {name: _build(services[name]) for name in ALL_AIRFLOW}
    assert all(builds.values()), f"every Airflow service must build the image: {builds}"
    distinct = {json.dumps(build, sort_keys=True) for build in builds.values()}
    assert len(distinct) == 1, f"the Airflow services build different images: {builds}"
    build = builds["airflow-apiserver"]
    assert build is not None and Path(build["context"]) == ROOT
    assert (Path(build["context"]) / build["dockerfile"]).resolve() == AIRFLOW_DOCKERFILE
    images = {services[name].get("image") for name in ALL_AIRFLOW}
    assert len(images) == 1 and None not in images, f"the Airflow services must share one image tag: {images}"


def test_airflow_services_share_metadata_db_and_secrets(services: dict[str, Any]) -> None:
    envs = {name: _env(services[name]) for name in ALL_AIRFLOW}
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__CORE__EXECUTOR",
    ):
        values = {name: env.get(key) for name, env in envs.items()}
        assert None not in values.values() and len(set(values.values())) == 1, f"{key} differs between services: {values}"
        assert not any("${" in (value or "") for value in values.values()), f"{key} is not interpolated: {values}"
    env = envs["airflow-scheduler"]
    assert re.fullmatch(r"postgresql\+psycopg2://[^@/]+@postgres(:5432)?/airflow", env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] or "")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "pss-local-development-jwt-secret", "the JWT secret's default did not resolve"
    aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"] or "")
    assert aws["conn_type"] == "aws" and aws["extra"] == {"endpoint_url": "http://aws:5000", "region_name": "us-east-1"}
    warehouse = json.loads(env["AIRFLOW_CONN_PSS_WAREHOUSE"] or "{}")
    assert warehouse["conn_type"] == "postgres"
    assert (warehouse["host"], warehouse["port"], warehouse["schema"]) == ("postgres", 5432, "warehouse")
    assert env["PSS_RUNS_URI"] == "s3://pss-runs/runs" and env["PSS_CACHE_URI"] == "dynamodb://pss-embeddings"


def test_apiserver_publishes_8080(services: dict[str, Any]) -> None:
    ports = _published_ports(services["airflow-apiserver"])
    assert ("8080", "8080") in ports, f"airflow-apiserver must publish 8080:8080, has {services['airflow-apiserver'].get('ports')}"


def test_healthchecks(services: dict[str, Any]) -> None:
    for name in ("postgres", "aws", *AIRFLOW_SERVICES):
        assert _has_healthcheck(services[name]), f"{name} has no healthcheck"
    # `$${HOSTNAME}` in the file is Compose's escape: the container's shell must see ${HOSTNAME}.
    for name in ("airflow-dag-processor", "airflow-triggerer"):
        assert '"${HOSTNAME}"' in services[name]["healthcheck"]["test"][1], f"{name}: the healthcheck's $$ escape did not resolve"


def test_depends_on_conditions(services: dict[str, Any]) -> None:
    for name, expected in EXPECTED_DEPENDS_ON.items():
        actual = _conditions(services[name])
        wrong = {dep: actual.get(dep) for dep, condition in expected.items() if actual.get(dep) != condition}
        assert not wrong, f"{name}: depends_on should include {expected}; got {actual}"
    for name, service in services.items():
        for dep, condition in _conditions(service).items():
            assert dep in services, f"{name} depends on an unknown service {dep}"
            if not service.get("profiles"):
                assert not services[dep].get("profiles"), (
                    f"{name} is always enabled but depends on {dep}, which is in profiles {services[dep]['profiles']}"
                )
            if condition == HEALTHY:
                assert _has_healthcheck(services[dep]), f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
            if condition == COMPLETED:
                restart = services[dep].get("restart", "no")
                assert restart in ("no", "on-failure"), f"{name} waits for one-shot {dep} to finish, but {dep} has restart: {restart}"


def test_batch_image_is_build_only(services: dict[str, Any]) -> None:
    service = services["batch-image"]
    assert service.get("profiles") == ["build"]
    assert service.get("image") == "pss-batch:latest"
    build = _build(service)
    assert build is not None and (Path(build["context"]) / build["dockerfile"]).resolve() == BATCH_DOCKERFILE


# ---------------------------------------------------------------------------------------------- Dockerfiles


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comment lines dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if line.strip().startswith("#"):
            continue  # comments (also inside a continued instruction) and parser directives
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        if logical:
            keyword, _, arguments = logical.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _copy_sources(arguments: str) -> list[str] | None:
    """Source paths of one COPY from the build context; None for COPY --from (another stage or image)."""
    if arguments.startswith("["):
        words = json.loads(arguments)
    else:
        words = shlex.split(arguments)
    flags = [word for word in words if word.startswith("--")]
    if any(flag.startswith("--from=") for flag in flags):
        return None
    paths = [word for word in words if not word.startswith("--")]
    assert len(paths) >= 2, f"COPY needs a source and a destination: COPY {arguments}"
    return paths[:-1]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last matching pattern wins; a pattern
    that matches a parent directory matches everything below it), as Docker's pattern matcher does."""
    ignore_file = ROOT / ".dockerignore"
    if not ignore_file.exists():
        return False
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in ignore_file.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        regex = _pattern_regex(os.path.normpath(pattern.lstrip("!").strip()).strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_batch_entrypoint_is_pss_step() -> None:
    entrypoints = [arguments for keyword, arguments in _instructions(BATCH_DOCKERFILE) if keyword == "ENTRYPOINT"]
    assert entrypoints, "docker/batch.Dockerfile has no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["pss", "step"], f"the last ENTRYPOINT is {entrypoints[-1]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_copy_sources_exist_and_are_in_the_context(dockerfile: Path) -> None:
    copies = [_copy_sources(arguments) for keyword, arguments in _instructions(dockerfile) if keyword in ("COPY", "ADD")]
    sources = [source for group in copies if group is not None for source in group]
    assert sources, f"{dockerfile.name} copies nothing from the build context"
    for source in sources:
        assert list(ROOT.glob(source.rstrip("/"))), f"{dockerfile.name}: COPY source {source!r} does not exist in the repository"
        assert not _dockerignored(source), f"{dockerfile.name}: COPY source {source!r} is excluded by .dockerignore"


def test_docker_build_check_when_an_engine_is_reachable() -> None:
    """`docker build --check` needs an engine; without one this check is simply not made (the static checks stand)."""
    docker = shutil.which("docker")
    if docker is None:
        return
    try:
        engine = subprocess.run([docker, "info"], capture_output=True, timeout=15, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        engine = False
    if not engine:
        return
    for dockerfile in DOCKERFILES:
        command = [docker, "build", "--check", "-f", str(dockerfile), str(ROOT)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"`{shlex.join(command)}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
