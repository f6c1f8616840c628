"""Serve the FreeCar REST API (FastAPI on uvicorn): riders, fleet managers and admins.

Configuration comes from FREECAR_* variables: FREECAR_ENV, FREECAR_DATABASE_URL,
FREECAR_REDIS_URL and the API's own FREECAR_API_* settings (token keys, WeChat AppID and
AppSecret, CORS origins, rate-limit budgets...; see docs/api.md). Interactive docs are at
/docs. In development without FREECAR_API_TOKEN_KEYS, tokens are signed with a random key
that dies with the process; `--generate-key` prints a real one.

In development mode (FREECAR_ENV=development, the default) it binds only loopback
addresses unless told otherwise (`--allow-development-on-network`): development signs
anyone in through dev login.

SIGINT or SIGTERM lets in-flight requests finish, closes the pool and Redis, and then ends
the process by that same signal (uvicorn re-raises it, so process managers see why it
stopped). Exit codes otherwise: 2 bad configuration (a development API on a network
address included); 3 could not start (the database unreachable: one line says where). Redis
may be down at start: rate limits fail open and the live map waits for it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from api.settings import ApiSettings

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `freecar api` options (each overrides its FREECAR_* variable)."""
    parser.add_argument("--host", help="address to bind (FREECAR_API_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (FREECAR_API_PORT; default 8000)")
    parser.add_argument(
        "--reload", action="store_true", help="restart when the code changes (development)"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default INFO)",
    )
    parser.add_argument(
        "--allow-development-on-network",
        action="store_true",
        help="serve development mode on a non-loopback address "
        "(FREECAR_API_ALLOW_DEVELOPMENT_ON_NETWORK); dev login still answers only this machine",
    )
    parser.add_argument(
        "--generate-key",
        action="store_true",
        help="print a new token key for FREECAR_API_TOKEN_KEYS and exit",
    )


def _development_address_refusal(settings: ApiSettings) -> str | None:
    """Why these settings must not be served, or None: development stays on this machine."""
    from api.identity import is_loopback_host
    from core.settings import Environment

    if settings.env is not Environment.DEVELOPMENT or is_loopback_host(settings.api_host):
        return None
    if settings.api_allow_development_on_network:
        print(
            f"freecar api: development mode on {settings.api_host}, as allowed; "
            "dev login answers only this machine",
            file=sys.stderr,
        )
        return None
    return (
        f"refusing to serve development mode on {settings.api_host}, a non-loopback address: "
        "development signs anyone in and its tokens may use a throwaway key. Bind 127.0.0.1 "
        "(--host or FREECAR_API_HOST), set FREECAR_ENV=production, or pass "
        "--allow-development-on-network (FREECAR_API_ALLOW_DEVELOPMENT_ON_NETWORK=true) if "
        "you mean it"
    )


def _database_unreachable(settings: ApiSettings) -> str | None:
    """Why the database cannot be reached, in one line; None if it answers.

    Checked before serving: a lifespan that fails inside uvicorn ends in a traceback, and
    the person starting the API wants to know which address to fix, not where it failed.
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    url = settings.database_url.get_secret_value()
    timeout = max(1, round(settings.api_db_pool_timeout_s))
    try:
        with psycopg.connect(url, connect_timeout=timeout):
            return None
    except psycopg.Error as exc:
        parts = conninfo_to_dict(url)
        host, port = parts.get("host", "localhost"), parts.get("port", 5432)
        where = f"{host}:{port}/{parts.get('dbname', '')}"
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return f"cannot reach the database at {where} (FREECAR_DATABASE_URL): {reason}"


def _startup_refusal(settings: ApiSettings) -> tuple[int, str] | None:
    """Why not to start, with the exit code; None when the API may serve."""
    # The address first: serving development on a network is refused whatever else holds.
    refusal = _development_address_refusal(settings)
    if refusal is not None:
        return EXIT_CONFIG, refusal
    try:
        # Read now rather than when the app starts serving: an unset URL is named at once.
        settings.database_url.get_secret_value()
        settings.redis_url.get_secret_value()
    except ValueError as exc:
        return EXIT_CONFIG, f"bad configuration: {exc}"
    unreachable = _database_unreachable(settings)
    if unreachable is not None:
        return EXIT_UNREACHABLE, unreachable
    return None


def run(args: argparse.Namespace) -> int:
    """Run `freecar api` until SIGINT or SIGTERM."""
    if args.generate_key:
        from api.auth.keys import generate_token_key

        print(generate_token_key())
        return 0

    import uvicorn
    from pydantic import ValidationError

    from api.context import configure_logging
    from api.settings import ApiSettings

    configure_logging(args.log_level)
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["api_host"] = args.host
    if args.port:
        overrides["api_port"] = args.port
    if args.allow_development_on_network:
        overrides["api_allow_development_on_network"] = True
    try:
        settings = ApiSettings(**overrides)
    except (ValidationError, ValueError) as exc:
        print(f"freecar api: bad configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    refusal = _startup_refusal(settings)
    if refusal is not None:
        code, why = refusal
        print(f"freecar api: {why}", file=sys.stderr)
        return code
    common: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        "log_config": None,  # configure_logging's handler, with request ids, stays in charge
        "log_level": args.log_level.lower(),
        "proxy_headers": True,
        "forwarded_allow_ips": settings.api_forwarded_allow_ips,
        "server_header": False,
        # Lets in-flight requests finish on SIGTERM; the demo's supervisor waits 10 s.
        "timeout_graceful_shutdown": 8,
    }
    if args.reload:
        # The reloader imports the factory in a fresh process, which reads FREECAR_* itself.
        uvicorn.run("api.app:create_app", factory=True, reload=True, **common)
        return 0
    from api.app import create_app

    print(f"freecar api: serving on {settings.public_url} (docs at /docs)", flush=True)
    uvicorn.run(create_app(settings), **common)
    return 0
