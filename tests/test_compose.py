"""docker-compose.yml, read as data: the architecture's services, no secrets, real settings.

No Docker engine is needed: the file is parsed with PyYAML (merge keys resolved) and its
structure checked against the architecture and the settings classes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

import api.settings
import hub.settings
import worker.app
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
# What docs/ARCHITECTURE names: TimescaleDB, Mosquitto, Redis, hub x2, api, worker, plus
# the one-shot preparation the others wait for.
REQUIRED = {"timescaledb", "mosquitto", "redis", "hub-1", "hub-2", "api", "worker", "migrate"}
LONG_RUNNING = {"timescaledb", "mosquitto", "redis", "hub-1", "hub-2", "api", "worker"}
ONE_SHOT = {"migrate", "broker-setup", "mosquitto-init"}
# A value is a reference to .env when every secret part of it is `${NAME...}`.
_INTERPOLATION = re.compile(r"\$\{[A-Z0-9_]+(?::?[-?][^}]*)?\}")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def _settings_variables() -> set[str]:
    """FREECAR_* names of every field of every settings class (subclasses included)."""
    del api.settings, hub.settings, worker.app  # imported so their classes are registered
    names: set[str] = set()
    pending: list[type[Settings]] = [Settings]
    while pending:
        cls = pending.pop()
        names |= {f"FREECAR_{field.upper()}" for field in cls.model_fields}
        pending += cls.__subclasses__()
    return names


def test_every_service_of_the_architecture_exists(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= REQUIRED
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert "pg15" in services["timescaledb"]["image"]
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["worker"]["command"][:4] == ["celery", "-A", "worker.app", "worker"]
    mounts = " ".join(services["mosquitto"]["volumes"])
    assert "./broker/mosquitto.conf" in mounts
    assert "./broker/conf.d" in mounts
    assert (ROOT / "broker" / "conf.d" / "dynamic-security.conf").is_file()
    assert "pgdata" in compose["volumes"]


def test_restart_policies_healthchecks_and_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in LONG_RUNNING:
        assert services[name]["restart"] in {"unless-stopped", "always"}, name
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", name
    for name in ("timescaledb", "mosquitto", "redis", "api", "worker"):
        assert "test" in services[name]["healthcheck"], name
    for name in ("hub-1", "hub-2", "api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert services["migrate"]["depends_on"]["timescaledb"]["condition"] == "service_healthy"


def test_no_literal_secrets(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            secretish = _SECRET_NAME.search(key) or ("://" in value and "@" in value)
            if not secretish:
                continue
            # Whatever is left once the ${...} references are removed must hold no secret:
            # for a URL, no password between ':' and '@'.
            rest = _INTERPOLATION.sub("", value)
            if "://" in value:
                login = rest.split("://", 1)[1].split("@", 1)[0] if "@" in rest else ""
                assert ":" not in login or login.endswith(":"), f"{name}.{key}"
            else:
                assert rest == "", f"{name}.{key} has a literal value"
    env_example = (ROOT / ".env.example").read_text()
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()  # never in the image
    for line in env_example.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            if _SECRET_NAME.search(key):
                assert value == "changeme", f".env.example {key} is not a placeholder"


def test_every_freecar_variable_is_a_setting(compose: dict[str, Any]) -> None:
    known = _settings_variables()
    used = {
        key
        for service in compose["services"].values()
        for key in _environment(service)
        if key.startswith("FREECAR_")
    }
    assert used, "no FREECAR_ variables at all?"
    assert used - known == set()
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.startswith("FREECAR_")
    }
    assert example - known == set()


def test_each_hub_has_its_own_login_bound_to_its_client_id(compose: dict[str, Any]) -> None:
    hubs = {
        name: service
        for name, service in compose["services"].items()
        if (service.get("command") or [])[:2] == ["freecar", "hub"]
    }
    assert len(hubs) >= 2
    ids = [_environment(service)["FREECAR_HUB_CLIENT_ID"] for service in hubs.values()]
    assert len(set(ids)) == len(ids)
    for service in hubs.values():
        env = _environment(service)
        assert env["FREECAR_HUB_SIGNING_KEY"].startswith("${")
        # The login is named after the client id: the one broker-setup binds to that id.
        assert env["FREECAR_MQTT_URL"].startswith(f"mqtt://{env['FREECAR_HUB_CLIENT_ID']}:${{")
    # broker-setup makes exactly these logins; a hub missing from it could not connect.
    setup = compose["services"]["broker-setup"]["command"]
    assert setup[:3] == ["freecar", "vehicle", "broker-setup"]
    bound = [setup[i + 1] for i, arg in enumerate(setup) if arg == "--hub"]
    assert sorted(bound) == sorted(ids)


# Programs that may see a password in their arguments: Redis replaces its process title
# (what `ps` shows) with its address as it starts; `printf` is the shell's own, not a process.
_MAY_SEE_PASSWORDS = {"redis-server", "printf"}


def _programs_given_passwords(shell: str) -> list[str]:
    """The programs of a shell command line that get a password variable as an argument."""
    offenders = []
    for simple in re.split(r"\|\|?|;|&&|[{}]", shell):
        words = shlex.split(simple.replace("$$", "$"))
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]  # VAR=value prefixes go into the environment, not argv
        if words and words[0] == "exec":
            words = words[1:]
        if words and any("PASSWORD" in word for word in words[1:]):
            offenders.append(words[0])
    return [program for program in offenders if program not in _MAY_SEE_PASSWORDS]


def test_no_password_on_a_command_line(compose: dict[str, Any]) -> None:
    """`ps` on the host shows every container's processes: no secret in their arguments."""
    for name, service in compose["services"].items():
        lines = []
        command = service.get("command")
        if isinstance(command, list) and command[:2] == ["sh", "-c"]:
            lines.append(command[2])
        test = (service.get("healthcheck") or {}).get("test") or []
        if test[:1] == ["CMD-SHELL"]:
            lines.append(test[1])
        for line in lines:
            assert _programs_given_passwords(line) == [], f"{name}: {line}"
    assert _programs_given_passwords('mosquitto_sub -u admin -P "$$MQTT_ADMIN_PASSWORD"') == [
        "mosquitto_sub"
    ]


def test_the_image_copies_every_package() -> None:
    """A package left out of the Dockerfile fails only in production: say it here."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, flags=re.MULTILINE))
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages <= copied, sorted(packages - copied)
