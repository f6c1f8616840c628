"""`freecar api` and `freecar create-admin` as an operator runs them."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx
import pytest
from api_testing import Api, SignedIn

from api.auth.keys import parse_token_key
from freecar.cli import COMMANDS, build_parser
from freecar.demo import _api_lines
from freecar.supervisor import Component

if TYPE_CHECKING:
    from pathlib import Path

# Starting Python, FastAPI and a pool takes a few seconds on a loaded 2-core machine.
START_DEADLINE_S = 30.0


def freecar(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "freecar", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREECAR_")}
    return env | extra


def test_both_commands_are_registered_with_help() -> None:
    assert COMMANDS["api"] == "api.cli"
    assert COMMANDS["create-admin"] == "api.users.cli"
    parser = build_parser()
    args = parser.parse_args(["api", "--port", "9000"])
    assert args.port == 9000
    args = parser.parse_args(["create-admin", "ops@example.com", "--password-stdin"])
    assert args.password_stdin


def test_generate_key_prints_a_usable_key() -> None:
    result = freecar("api", "--generate-key")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert parse_token_key(key).key_id.startswith("k4.lid.")


def test_bad_configuration_exits_2() -> None:
    result = freecar("api", env=clean_env(FREECAR_API_RATE_LIMIT_IP="lots"))
    assert result.returncode == 2
    assert "bad configuration" in result.stderr
    production = freecar(
        "api",
        env=clean_env(
            FREECAR_ENV="production",
            FREECAR_API_WECHAT_APPID="wx1",
            FREECAR_API_WECHAT_SECRET="s3cret-for-real-x",
        ),
    )
    assert production.returncode == 2
    assert "FREECAR_API_TOKEN_KEYS" in production.stderr


@pytest.mark.anyio
async def test_create_admin_then_sign_in(api: Api) -> None:
    env = clean_env(FREECAR_DATABASE_URL=api.settings.database_url.get_secret_value())
    email = f"root-{secrets.token_hex(4)}@example.com"
    password = "the first admin's passphrase"
    created = freecar(
        "create-admin", email, "--password-stdin", "--json", env=env, stdin=password + "\n"
    )
    assert created.returncode == 0, created.stderr
    assert '"role": "admin"' in created.stdout
    again = freecar("create-admin", email, "--password-stdin", env=env, stdin=password + "\n")
    assert again.returncode == 1
    assert "email_taken" in again.stderr
    short = freecar("create-admin", "x@example.com", "--password-stdin", env=env, stdin="short\n")
    assert short.returncode == 2
    assert "password" in short.stderr
    signed_in = SignedIn.from_response(
        await api.post("/v1/auth/staff", json={"email": email, "password": password})
    )
    assert signed_in.role == "admin"
    assert (await api.get("/v1/admin/users", signed_in)).status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_freecar_api_serves_and_logs_request_ids(
    migrated_database_url: str, redis_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    log_path = tmp_path / "api.log"
    env = clean_env(
        FREECAR_ENV="development",
        FREECAR_DATABASE_URL=migrated_database_url,
        FREECAR_REDIS_URL=redis_url,
        FREECAR_API_HOST="127.0.0.1",
        FREECAR_API_PORT=str(port),
    )
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "freecar", "api"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        # What the demo's banner tells a newcomer to paste, pasted.
        lines = _api_lines(env, [Component("api", [])])
        assert lines[0].split() == ["api", base]
        assert f"{base}/docs" in lines[1]
        curl = re.search(r"curl -s -X POST (\S+) -H '([^']+)' -d '([^']+)'", lines[2])
        assert curl is not None, lines
        url, header, payload = curl.groups()
        name, _, value = header.partition(": ")
        login = httpx.post(url, content=payload, headers={name: value}, timeout=5)
        assert login.status_code == 200, login.text
        request_id = login.headers["X-Request-ID"]
        me = httpx.get(
            f"{base}/v1/me",
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
            timeout=5,
        )
        assert me.json()["display_name"] == "demo"
        assert httpx.get(f"{base}/docs", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    output = log_path.read_text()
    # Stopped cleanly, then ended by the signal it was sent (uvicorn re-raises it).
    assert code == -signal.SIGTERM, output
    assert "Application shutdown complete" in output
    # The access log line of that request carries its id.
    assert re.search(rf"\[{request_id}\].*POST /v1/auth/dev-login", output), output
    assert "random key for this process" in output


ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - the address a development API must not take


@pytest.mark.parametrize(
    ("host", "how"),
    [
        (ALL_INTERFACES, "flag"),
        (ALL_INTERFACES, "env"),
        ("::", "env"),
        ("192.0.2.10", "env"),
        ("api.example.com", "env"),
    ],
)
def test_development_mode_refuses_a_network_address(host: str, how: str) -> None:
    development = clean_env(FREECAR_ENV="development")
    if how == "flag":
        result = freecar("api", "--host", host, env=development)
    else:
        result = freecar("api", env=development | {"FREECAR_API_HOST": host})
    assert result.returncode == 2, result.stderr
    assert "development mode" in result.stderr
    assert "--allow-development-on-network" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_development_on_a_network_address_when_told() -> None:
    unreachable = clean_env(
        FREECAR_ENV="development",
        FREECAR_DATABASE_URL="postgresql://nobody@127.0.0.1:9/nothing",
        FREECAR_REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0",
        FREECAR_API_DB_POOL_TIMEOUT_S="0.5",
        FREECAR_API_PORT=str(_free_port()),
    )
    # Past the address check, it goes on to start (and fails on the missing database).
    flagged = freecar(
        "api", "--host", ALL_INTERFACES, "--allow-development-on-network", env=unreachable
    )
    assert flagged.returncode == 3, flagged.stderr
    assert "dev login answers only this machine" in flagged.stderr
    setting = freecar(
        "api",
        env=unreachable
        | {
            "FREECAR_API_HOST": ALL_INTERFACES,
            "FREECAR_API_ALLOW_DEVELOPMENT_ON_NETWORK": "true",
        },
    )
    assert setting.returncode == 3, setting.stderr
    # Loopback addresses need nothing.
    local = freecar("api", "--host", "127.0.0.1", env=unreachable)
    assert local.returncode == 3, local.stderr


def test_an_unreachable_database_exits_3() -> None:
    result = freecar(
        "api",
        env=clean_env(
            FREECAR_DATABASE_URL="postgresql://nobody@127.0.0.1:9/nothing",
            # Named, so the API starts and finds the database down (an unset URL is refused
            # before anything starts).
            FREECAR_REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0",
            FREECAR_API_DB_POOL_TIMEOUT_S="0.5",
            FREECAR_API_PORT=str(_free_port()),
        ),
    )
    assert result.returncode == 3, result.stderr
    assert "database" in result.stderr
    assert "FREECAR_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def _create_admin_detached(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`freecar create-admin` as cron, CI or a container runs it: no terminal at all."""
    return subprocess.run(
        [sys.executable, "-m", "freecar", "create-admin", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        start_new_session=True,  # no controlling terminal: /dev/tty cannot be opened
    )


def test_create_admin_without_a_terminal_says_how_to_give_the_password(
    migrated_database_url: str,
) -> None:
    env = clean_env(FREECAR_DATABASE_URL=migrated_database_url)
    result = _create_admin_detached("nobody-asked@example.com", env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "--password-stdin" in result.stderr
    assert "FREECAR_ADMIN_PASSWORD" in result.stderr


def test_create_admin_takes_the_password_from_the_environment(
    migrated_database_url: str,
) -> None:
    email = f"env-{secrets.token_hex(4)}@example.com"
    env = clean_env(
        FREECAR_DATABASE_URL=migrated_database_url,
        FREECAR_ADMIN_PASSWORD="a passphrase from the environment",
    )
    result = _create_admin_detached(email, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert f'"email": "{email}"' in result.stdout


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://nobody@127.0.0.1:9/nothing", "cannot reach the database"),
        ("this is not a url", "bad database URL"),
    ],
)
def test_create_admin_with_a_bad_database_says_so_without_a_traceback(url: str, says: str) -> None:
    result = freecar(
        "create-admin", "ops@example.com", "--password-stdin", "--database-url", url,
        env=clean_env(), stdin="a long enough passphrase\n",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
