"""Vehicle MQTT logins: issue one with the in-car unit's agent config; set up the broker.

  freecar vehicle provision sh-0001 --out agent.toml
  freecar vehicle broker-setup

`broker-setup` (once per broker, safe to repeat) gives Mosquitto's dynamic security what
FreeCar needs: a login per hub, named after the hub's client id and bound to it (`--hub ID`,
repeatable; default FREECAR_MQTT_URL's user), holding the `hub` role (broker/roles.json)
with FREECAR_MQTT_URL's password; deny-by-default for everything no role grants; and every
vehicle login bound to its vehicle id with its role matching roles.json. It logs in with
FREECAR_MQTT_ADMIN_URL.

`provision` makes a new random password for an existing, not retired vehicle (replacing any
previous one), stores its hash, gives it to the broker through Mosquitto's dynamic-security
plugin (FREECAR_MQTT_ADMIN_URL, under FREECAR_TOPIC_ROOT), and prints the agent's config:
vehicle_id, mqtt_url with the new password, topic_root and trusted_keys (the hub's public key,
from FREECAR_HUB_SIGNING_KEY or FREECAR_HUB_SIGNING_KEY_FILE when set here). The password
is shown only this once: keep the file (mode 600) and install it on the unit.

The broker address written for the car is FREECAR_FLEET_AGENT_MQTT_URL (or --broker-url),
else FREECAR_MQTT_URL's host and port.

Exit codes: 0 done; 1 refused (no such vehicle, retired, database unreachable); 2 usage;
3 the broker did not take the change (the message says why: no dynamic security, broker
down); after `provision` the login is stored and printed anyway: run it again once the
broker is fixed.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from api.fleet.settings import FleetSettings
    from protocol.broker_url import BrokerUrl

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_BROKER = 3


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `freecar vehicle` subcommands."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    provision = actions.add_parser(
        "provision",
        help="issue (or rotate) a vehicle's MQTT login and print its agent config",
        description="Issue (or rotate) a vehicle's MQTT login and print its agent config TOML.",
    )
    provision.add_argument("vehicle_id", metavar="ID", help="the vehicle's id (it must exist)")
    provision.add_argument(
        "--out", metavar="FILE", help="write the config to FILE (mode 600) instead of stdout"
    )
    provision.add_argument(
        "--broker-url",
        metavar="URL",
        help="the broker as the car reaches it, e.g. mqtts://mqtt.example.com:8883 "
        "(default FREECAR_FLEET_AGENT_MQTT_URL, else FREECAR_MQTT_URL's host and port)",
    )
    provision.add_argument("--database-url", help="PostgreSQL URL (default FREECAR_DATABASE_URL)")
    setup = actions.add_parser(
        "broker-setup",
        help="create the hub logins and role on the broker, bind every login to its client id",
        description="Create a login per hub on Mosquitto's dynamic security, each bound to its "
        "client id, deny what no role grants, and bind every vehicle login to its vehicle id "
        "with its role matching broker/roles.json. Safe to repeat.",
    )
    setup.add_argument(
        "--hub",
        action="append",
        default=[],
        metavar="CLIENT_ID",
        help="a hub's FREECAR_HUB_CLIENT_ID: its login gets this name, connects only under this "
        "id and has FREECAR_MQTT_URL's password (repeatable; default FREECAR_MQTT_URL's user)",
    )


class _RefusedError(Exception):
    """The login could not be issued; the message says why."""


def run(args: argparse.Namespace) -> int:
    """Run `freecar vehicle`."""
    if args.action == "broker-setup":
        return _broker_setup(args.hub)
    return _provision_command(args)


def _broker_setup(hubs: list[str]) -> int:
    from pydantic import ValidationError

    from api.fleet.settings import FleetSettings
    from broker.provisioning import DynsecClient, ProvisioningError, check_client_id

    try:
        settings = FleetSettings()
    except ValidationError as exc:
        print(f"freecar vehicle: {exc}", file=sys.stderr)
        return EXIT_USAGE
    admin_url = settings.mqtt_admin_url.get_secret_value()
    hub = settings.broker
    if not admin_url or hub.username is None or hub.password is None:
        print(
            "freecar vehicle: set FREECAR_MQTT_ADMIN_URL (the dynamic-security admin) and "
            "FREECAR_MQTT_URL with the hub's user and password",
            file=sys.stderr,
        )
        return EXIT_USAGE
    hubs = hubs or [hub.username]
    try:
        for client_id in hubs:
            check_client_id(client_id)
    except ProvisioningError as exc:
        print(f"freecar vehicle: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with DynsecClient(admin_url, timeout_s=settings.fleet_dynsec_timeout_s) as dynsec:
            report = dynsec.set_up(hubs=hubs, hub_password=hub.password, root=settings.topic_root)
    except ProvisioningError as exc:
        print(f"freecar vehicle: {exc}", file=sys.stderr)
        return EXIT_BROKER
    root = settings.topic_root
    for verb, names in (("created", report.hubs_created), ("updated", report.hubs_updated)):
        for name in names:
            print(f"{verb} the hub login {name!r} (client id {name}, role hub, under {root}/)")
    audit = report.audit
    print(
        f"{audit.vehicles} vehicle logins: {audit.bound} newly bound to their vehicle id, "
        f"{audit.roles_updated} roles brought up to date"
        + (
            f", {audit.other_roots} under another topic root left alone"
            if audit.other_roots
            else ""
        )
    )
    if audit.unbound:
        print(
            "freecar vehicle: these logins may still connect under any client id and take over "
            f"another client's session: {', '.join(audit.unbound)} (docs/operations.md)",
            file=sys.stderr,
        )
    return 0


def _provision_command(args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from api.fleet.settings import FleetSettings
    from protocol.broker_url import BrokerUrl, BrokerUrlError
    from protocol.topics import is_valid_vehicle_id

    if not is_valid_vehicle_id(args.vehicle_id):
        print(f"freecar vehicle: {args.vehicle_id!r} is not a vehicle id", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = FleetSettings()
        broker = BrokerUrl.parse(
            args.broker_url or settings.fleet_agent_mqtt_url or settings.mqtt_url.get_secret_value()
        )
        trusted = _hub_public_key()
    except (ValidationError, BrokerUrlError, ValueError) as exc:
        print(f"freecar vehicle: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        password, broker_error = asyncio.run(_provision(args, settings))
    except _RefusedError as exc:
        print(f"freecar vehicle: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    text = agent_toml(args.vehicle_id, password, broker, settings.topic_root, trusted)
    if args.out:
        descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(args.out, 0o600)  # noqa: PTH101 - an existing file keeps its mode otherwise
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if broker_error is not None:
        print(
            f"freecar vehicle: the login is stored but the broker did not take it: {broker_error}",
            file=sys.stderr,
        )
        return EXIT_BROKER
    return 0


def _hub_public_key() -> str | None:
    """The hub's verifying key (PASERK) from the hub's own variables, if set here."""
    from pathlib import Path

    from protocol.errors import KeyFormatError
    from protocol.keys import SigningKey

    text = os.environ.get("FREECAR_HUB_SIGNING_KEY", "").strip()
    path = os.environ.get("FREECAR_HUB_SIGNING_KEY_FILE", "").strip()
    try:
        if text:
            key = (
                SigningKey.from_pem(text.encode("ascii"))
                if text.startswith("-----BEGIN")
                else SigningKey.from_paserk(text)
            )
        elif path:
            key = SigningKey.load(Path(path))
        else:
            return None
    except (KeyFormatError, OSError) as exc:
        raise ValueError(f"cannot read the hub's signing key: {exc}") from exc
    return key.verifying_key.to_paserk()


def _toml_string(text: str) -> str:
    # Vehicle ids, roots, keys and URL-quoted passwords hold no quote or backslash; escape
    # anyway so the file stays valid TOML whatever comes in.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def agent_toml(
    vehicle_id: str, password: str, broker: BrokerUrl, topic_root: str, trusted_key: str | None
) -> str:
    """The agent's config file for this vehicle."""
    from urllib.parse import quote

    scheme = "mqtts" if broker.tls else "mqtt"
    login = f"{quote(vehicle_id, safe='')}:{quote(password, safe='')}"
    url = f"{scheme}://{login}@{broker.host}:{broker.port}"
    lines = [
        f"# FreeCar agent configuration for vehicle {vehicle_id} (freecar vehicle provision).",
        "# It holds the vehicle's MQTT password: readable by the agent's user only (chmod 600).",
        f"vehicle_id = {_toml_string(vehicle_id)}",
        f"mqtt_url = {_toml_string(url)}",
        f"topic_root = {_toml_string(topic_root)}",
    ]
    if trusted_key is not None:
        lines.append(f"trusted_keys = [{_toml_string(trusted_key)}]")
    else:
        lines += [
            "# trusted_keys: the hub's public key (k4.public...), without which the car refuses",
            "# every command. Run this command where FREECAR_HUB_SIGNING_KEY(_FILE) is set, or",
            "# paste the key the hub logs at start-up (see docs/operations.md):",
            '# trusted_keys = ["k4.public.…"]',
        ]
    return "\n".join(lines) + "\n"


async def _provision(args: argparse.Namespace, settings: FleetSettings) -> tuple[str, str | None]:
    import psycopg
    from psycopg import errors

    from api.errors import ApiError
    from api.fleet import service
    from api.work import Work

    url = args.database_url or settings.database_url.get_secret_value()
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("SET TIME ZONE 'UTC'")
            # As the API does: the login is committed, then the broker is told.
            login = await service.rotate_credentials(Work(conn), settings, args.vehicle_id)
    except ApiError as exc:
        raise _RefusedError(f"{exc.message} ({exc.code})") from exc
    except errors.UndefinedTable as exc:
        raise _RefusedError("the schema is missing; run `freecar migrate` first") from exc
    except psycopg.OperationalError as exc:
        raise _RefusedError(f"cannot reach the database: {exc}") from exc
    return login.password, login.broker_error
