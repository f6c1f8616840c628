"""A private Mosquitto 2.x with dynamic security: no anonymous access, two generated logins.

The dynamic security file is written once, before the first start; from then on the
plugin owns it and saves every change made through `$CONTROL/dynamic-security/v1`, so
vehicles provisioned during a test survive a broker restart like the messages do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from typing import TYPE_CHECKING, Any

from devstack.accounts import running_as_root
from devstack.mqtt_probe import CONNACK_ACCEPTED, connack_code
from devstack.ports import LOOPBACK
from devstack.service import Service

if TYPE_CHECKING:
    from pathlib import Path

    from devstack.binaries import MosquittoBinaries
    from devstack.credentials import BrokerLogins, Login

# Mosquitto drops QoS 1 messages silently once a client has this many queued; its default
# of 1000 would lose messages whenever a consumer is away for a second under load, which is
# exactly what restart tests and backlog benchmarks do. 100k covers those with room.
MAX_QUEUED_MESSAGES = 100_000
# Unacknowledged QoS 1 messages in flight to one client (default 20). A larger window keeps
# a loopback consumer busy; small enough that a reconnect redelivers little.
MAX_INFLIGHT_MESSAGES = 100
# Seconds between saves of the in-memory database (default 1800: a kill then loses nearly
# everything since the start). Tests kill the broker on purpose and must lose no more than a
# crashed production broker would (which saves every 10 s). The devstack holds little:
# measured, a save's pause is lost in the noise (under 10 ms) and reaches about 80 ms only
# while a benchmark's 60,000-message backlog is queued.
AUTOSAVE_INTERVAL_S = 1
# PBKDF2-SHA512 rounds for the dynamic security file. The broker verifies on every CONNECT;
# a fleet of simulated vehicles connecting at once must not queue behind key stretching.
PBKDF2_ITERATIONS = 1000
SALT_BYTES = 12
HASH_BYTES = 64
SERVICE_ROLE = "service"
ADMIN_ROLE = "admin"
DYNSEC_TOPIC = "$CONTROL/dynamic-security/#"
# ACLs without a priority have -1; a higher one is checked first.
DENY_PRIORITY = 10


def _hashed(login: Login) -> dict[str, Any]:
    # The plugin's format: base64 of PBKDF2-HMAC-SHA512 over the raw (base64-decoded) salt.
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac(
        "sha512", login.password.encode(), salt, PBKDF2_ITERATIONS, HASH_BYTES
    )
    return {
        "username": login.username,
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": PBKDF2_ITERATIONS,
    }


def _allow(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def dynamic_security_config(logins: BrokerLogins) -> dict[str, Any]:
    """The plugin's JSON: an admin for the control API and a service role on every topic."""
    admin_acls = [
        _allow(kind, DYNSEC_TOPIC)
        for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")
    ]
    # Like `mosquitto_ctrl dynsec init`: the admin may also watch $SYS and every topic.
    admin_acls += [
        _allow("publishClientReceive", "$SYS/#"),
        _allow("subscribePattern", "$SYS/#"),
        _allow("publishClientReceive", "#"),
        _allow("subscribePattern", "#"),
        _allow("unsubscribePattern", "#"),
    ]
    service_acls = [
        _allow(kind, "#")
        for kind in (
            "publishClientSend",
            "publishClientReceive",
            "subscribePattern",
            "unsubscribePattern",
        )
    ]
    # In dynsec ACLs `#` also matches `$CONTROL/...` (measured on 2.0.11: the service
    # login could subscribe to the admin's responses). Deny it first: higher priority wins.
    service_acls += [
        {"acltype": kind, "topic": "$CONTROL/#", "allow": False, "priority": DENY_PRIORITY}
        for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")
    ]
    return {
        "clients": [
            {**_hashed(logins.admin), "roles": [{"rolename": ADMIN_ROLE}]},
            {**_hashed(logins.service), "roles": [{"rolename": SERVICE_ROLE}]},
        ],
        "roles": [
            {"rolename": ADMIN_ROLE, "acls": admin_acls},
            {"rolename": SERVICE_ROLE, "acls": service_acls},
        ],
        # Anything not granted by a role: no publishing, no subscribing.
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": True,
            "subscribe": False,
            "unsubscribe": True,
        },
    }


class MosquittoBroker(Service):
    """mosquitto on 127.0.0.1 with persistence and dynamic security in the stack directory.

    Its two logins are not bound to a client id: `freecar` is what the tests, the demo's hub
    and the simulator's cars all connect as, under many ids at once. Logins made through the
    admin (cars, hubs) are bound, as in production.
    """

    name = "mosquitto"
    # SIGTERM makes mosquitto save its in-memory database (sessions, queued and retained
    # messages) to the persistence file before exiting; SIGKILL loses what was not saved.

    def __init__(
        self,
        binaries: MosquittoBinaries,
        logins: BrokerLogins,
        *,
        workdir: Path,
        log_path: Path,
        ready_timeout: float,
    ) -> None:
        super().__init__(workdir=workdir, log_path=log_path, ready_timeout=ready_timeout)
        self.binaries = binaries
        self.logins = logins
        self.config_path = workdir / "mosquitto.conf"
        self.dynsec_path = workdir / "dynamic-security.json"

    def prepare(self) -> None:
        """Write the config for the current port; write the dynsec file only the first time."""
        self.workdir.mkdir(exist_ok=True)
        if not self.dynsec_path.exists():
            self.dynsec_path.write_text(json.dumps(dynamic_security_config(self.logins), indent=2))
            self.dynsec_path.chmod(0o600)
        self.config_path.write_text(self.config())

    def config(self) -> str:
        """The private mosquitto.conf."""
        lines = [
            "# Written by freecar devstack for one throwaway broker; regenerated on each start.",
            "per_listener_settings false",
            f"listener {self.port} {LOOPBACK}",
            "allow_anonymous false",
            f"plugin {self.binaries.dynsec_plugin}",
            f"plugin_opt_config_file {self.dynsec_path}",
            "persistence true",
            f"persistence_location {self.workdir}{os.sep}",
            f"autosave_interval {AUTOSAVE_INTERVAL_S}",
            "autosave_on_changes false",
            "# The default of 1000 queued messages per client drops the rest silently.",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
            "log_dest stderr",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if running_as_root():
            # Started as root, mosquitto switches to the `mosquitto` user, which could not
            # write this root-owned directory. The broker listens on loopback only.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        """Run mosquitto in the foreground with the private config."""
        return [str(self.binaries.path), "-c", str(self.config_path)]

    def is_ready(self) -> bool:
        """Whether the broker accepts the service login (so the plugin is loaded)."""
        login = self.logins.service
        return connack_code(self.port, login.username, login.password) == CONNACK_ACCEPTED
