"""Vehicle logins on Mosquitto through its dynamic-security plugin (`$CONTROL/dynamic-security/v1`).

A small synchronous client: it logs in with the broker's admin account, sends a batch of
commands, and waits for the plugin's answer on `$CONTROL/dynamic-security/v1/response`
(matched by correlation data). Each vehicle gets a client (username = vehicle id) and a role
of its own, `vehicle-<id>`, holding literal ACLs made from the template in `roles.json`:
Mosquitto 2.0's plugin does not substitute `%u` in role ACLs, so one shared role with
patterns would match nothing.

Brokers without the plugin (amqtt in the embedded devstack) never answer; that is reported
as `DynsecUnavailableError`, with a message saying so, after `timeout_s`.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocol.broker_url import BrokerUrl
from protocol.topics import check_root, check_vehicle_id

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = CONTROL_TOPIC + "/response"
VEHICLE_ROLE_PREFIX: Final = "vehicle-"
# The plugin answers a local command batch in milliseconds; seconds mean the broker is not
# Mosquitto with the plugin (nothing ever answers) or is badly overloaded.
DEFAULT_TIMEOUT_S: Final = 3.0
# A role's ACLs beat the defaults; vehicles have one role, so any priority works. Explicit
# so that adding a shared deny role later has something to rank against.
VEHICLE_ROLE_PRIORITY: Final = 0
# The plugin's own error strings (Mosquitto 2.0.x, src/plugins/dynamic-security).
CLIENT_EXISTS: Final = "Client already exists"
ROLE_EXISTS: Final = "Role already exists"
ACL_EXISTS: Final = "ACL with this topic already exists"
CLIENT_NOT_FOUND: Final = "Client not found"


class ProvisioningError(Exception):
    """Root of the broker provisioning errors; the message says what to do."""

    code: str = "broker_error"


class DynsecUnavailableError(ProvisioningError):
    """No dynamic-security plugin answered: not Mosquitto with dynsec, or no admin login."""

    code = "broker_not_dynsec"


class BrokerUnreachableError(ProvisioningError):
    """The broker refused the admin login or could not be reached."""

    code = "broker_unreachable"


class DynsecCommandError(ProvisioningError):
    """The plugin refused a command (its own error text is kept)."""

    code = "broker_refused"

    def __init__(self, command: str, error: str) -> None:
        self.command = command
        self.error = error
        super().__init__(f"dynamic security refused {command}: {error}")


@dataclass(frozen=True, slots=True)
class Acl:
    """One ACL of a role."""

    acltype: str
    topic: str
    allow: bool = True

    def as_json(self) -> dict[str, Any]:
        """The plugin's JSON for this ACL."""
        return {"acltype": self.acltype, "topic": self.topic, "allow": self.allow}


@dataclass(frozen=True, slots=True)
class Role:
    """A dynamic-security role: a name and its ACLs."""

    rolename: str
    acls: tuple[Acl, ...] = field(default_factory=tuple)


def _templates() -> dict[str, Any]:
    text = resources.files("broker").joinpath("roles.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _render(template: dict[str, Any], **values: str) -> Role:
    def fill(text: str) -> str:
        for name, value in values.items():
            text = text.replace("{" + name + "}", value)
        return text

    return Role(
        rolename=fill(template["rolename"]),
        acls=tuple(
            Acl(acltype=acl["acltype"], topic=fill(acl["topic"]), allow=bool(acl["allow"]))
            for acl in template["acls"]
        ),
    )


def vehicle_role(vehicle_id: str, root: str) -> Role:
    """The role of one vehicle: its own topics, literally."""
    return _render(
        _templates()["vehicle"], vehicle_id=check_vehicle_id(vehicle_id), root=check_root(root)
    )


def hub_role(root: str) -> Role:
    """The hub's role: every vehicle's telemetry, status and acks in, commands out."""
    return _render(_templates()["hub"], root=check_root(root))


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    """What the broker now holds for a vehicle."""

    username: str
    rolename: str
    created: bool
    """False when the client existed and only its password, role and state were renewed."""


class DynsecClient:
    """One admin connection to the plugin; `with DynsecClient(url) as dynsec: ...`."""

    def __init__(
        self, admin_url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, client_id: str | None = None
    ) -> None:
        self._url = BrokerUrl.parse(admin_url)
        self._timeout_s = timeout_s
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"freecar-provision-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv311,
        )
        if self._url.username is not None:
            self._client.username_pw_set(self._url.username, self._url.password)
        if self._url.tls:
            self._client.tls_set()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._connect_code: int | None = None
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # --- paho callbacks (network thread) ------------------------------------------------
    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._connect_code = int(reason.value)
        self._connected.set()

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        if all(int(reason.value) < 0x80 for reason in reasons):
            self._subscribed.set()

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
            responses = body.get("responses", [])
        except (ValueError, AttributeError):
            return  # not the plugin's answer
        for response in responses:
            if not isinstance(response, dict):
                continue
            correlation = str(response.get("correlationData", ""))
            with self._lock:
                entry = self._waiting.get(correlation)
            if entry is not None:
                entry[1].append(response)
                entry[0].set()

    # --- connection -----------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Log in as the admin and subscribe to the plugin's responses."""
        self._client.loop_start()
        try:
            self._client.connect(self._url.host, self._url.port, keepalive=30)
        except OSError as exc:
            self._client.loop_stop()
            raise BrokerUnreachableError(
                f"cannot reach the MQTT broker at {self._url.host}:{self._url.port}: {exc}"
            ) from exc
        if not self._connected.wait(self._timeout_s):
            self.close()
            raise BrokerUnreachableError("the MQTT broker did not answer the admin login in time")
        if self._connect_code != 0:
            self.close()
            raise BrokerUnreachableError(
                f"the MQTT broker refused the admin login (CONNACK {self._connect_code}); "
                "check FREECAR_MQTT_ADMIN_URL"
            )
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        if not self._subscribed.wait(self._timeout_s):
            self.close()
            raise DynsecUnavailableError(
                f"the broker refused a subscription to {RESPONSE_TOPIC}: it is not Mosquitto "
                "with the dynamic-security plugin, or the admin login lacks its role"
            )

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()

    # --- commands ------------------------------------------------------------------------
    def execute(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send commands in one message; return one response per command, in order.

        A response with an `error` key is the plugin's refusal; callers decide which ones
        they accept. Raises DynsecUnavailableError when nothing answers in time.
        """
        tagged = []
        entries: list[tuple[str, threading.Event, list[dict[str, Any]]]] = []
        for command in commands:
            correlation = secrets.token_hex(8)
            event = threading.Event()
            box: list[dict[str, Any]] = []
            entries.append((correlation, event, box))
            tagged.append({**command, "correlationData": correlation})
        with self._lock:
            for correlation, event, box in entries:
                self._waiting[correlation] = (event, box)
        try:
            self._client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
            for _correlation, event, _box in entries:
                if not event.wait(self._timeout_s):
                    raise DynsecUnavailableError(
                        f"no answer on {RESPONSE_TOPIC} within {self._timeout_s:g} s: the broker "
                        "is not Mosquitto with the dynamic-security plugin"
                    )
        finally:
            with self._lock:
                for correlation, _event, _box in entries:
                    self._waiting.pop(correlation, None)
        return [box[0] for _correlation, _event, box in entries]

    def run(self, command: dict[str, Any], *, accept: Sequence[str] = ()) -> dict[str, Any]:
        """One command; raises DynsecCommandError unless it succeeded or failed as accepted."""
        response = self.execute([command])[0]
        _check(response, accept)
        return response

    # --- what FreeCar needs ---------------------------------------------------------------
    def ensure_role(self, role: Role) -> None:
        """Create the role, or add any of its ACLs it lacks."""
        acls = [acl.as_json() for acl in role.acls]
        response = self.run(
            {"command": "createRole", "rolename": role.rolename, "acls": acls},
            accept=(ROLE_EXISTS,),
        )
        if response.get("error") == ROLE_EXISTS:
            results = self.execute(
                [{"command": "addRoleACL", "rolename": role.rolename, **acl} for acl in acls]
            )
            for result in results:
                _check(result, (ACL_EXISTS,))

    def provision_vehicle(self, vehicle_id: str, password: str, *, root: str) -> ProvisionResult:
        """Give the vehicle a login with this password and its own role; enable it."""
        role = vehicle_role(vehicle_id, root)
        self.ensure_role(role)
        response = self.run(
            {
                "command": "createClient",
                "username": vehicle_id,
                "password": password,
                "textname": f"FreeCar vehicle {vehicle_id}",
                "roles": [{"rolename": role.rolename, "priority": VEHICLE_ROLE_PRIORITY}],
            },
            accept=(CLIENT_EXISTS,),
        )
        if response.get("error") != CLIENT_EXISTS:
            return ProvisionResult(vehicle_id, role.rolename, created=True)
        # The username is taken. Renew it only if it is this vehicle's own login: a vehicle
        # id equal to a service login ("admin", "hub") must never take that login over.
        self._check_is_vehicle(vehicle_id, role.rolename)
        for result in self.execute(
            [
                {"command": "setClientPassword", "username": vehicle_id, "password": password},
                {"command": "enableClient", "username": vehicle_id},
            ]
        ):
            _check(result, ())
        return ProvisionResult(vehicle_id, role.rolename, created=False)

    def ensure_service_login(self, username: str, password: str, role: Role) -> bool:
        """Create (or update the password and role of) a service login such as the hub's.

        True when the login was created.
        """
        self.ensure_role(role)
        response = self.run(
            {
                "command": "createClient",
                "username": username,
                "password": password,
                "textname": f"FreeCar {role.rolename}",
                "roles": [{"rolename": role.rolename}],
            },
            accept=(CLIENT_EXISTS,),
        )
        if response.get("error") != CLIENT_EXISTS:
            return True
        commands: list[dict[str, Any]] = [
            {"command": "setClientPassword", "username": username, "password": password},
            {"command": "enableClient", "username": username},
        ]
        # Adding a role the client already holds is an "Internal error" in 2.0.x: ask first.
        if role.rolename not in _client_roles(
            self.run({"command": "getClient", "username": username})
        ):
            commands.append(
                {"command": "addClientRole", "username": username, "rolename": role.rolename}
            )
        for result in self.execute(commands):
            _check(result, ())
        return False

    def deny_by_default(self) -> None:
        """Nothing that no role grants: no publishing, subscribing or receiving by default."""
        self.run(
            {
                "command": "setDefaultACLAccess",
                "acls": [
                    {"acltype": "publishClientSend", "allow": False},
                    {"acltype": "publishClientReceive", "allow": False},
                    {"acltype": "subscribe", "allow": False},
                    {"acltype": "unsubscribe", "allow": True},
                ],
            }
        )

    def disable_vehicle(self, vehicle_id: str) -> bool:
        """Refuse the vehicle's login from now on (connected sessions are kicked).

        False when the broker had no such client (nothing to disable).
        """
        check_vehicle_id(vehicle_id)
        response = self.run(
            {"command": "getClient", "username": vehicle_id}, accept=(CLIENT_NOT_FOUND,)
        )
        if response.get("error") == CLIENT_NOT_FOUND:
            return False
        self._check_is_vehicle(vehicle_id, VEHICLE_ROLE_PREFIX + vehicle_id, response)
        self.run({"command": "disableClient", "username": vehicle_id})
        return True

    def _check_is_vehicle(
        self, username: str, rolename: str, response: dict[str, Any] | None = None
    ) -> None:
        if response is None:
            response = self.run({"command": "getClient", "username": username})
        if rolename not in _client_roles(response):
            raise DynsecCommandError(
                "createClient",
                f"the login {username!r} exists and is not a vehicle's (no role {rolename})",
            )


def _client_roles(response: dict[str, Any]) -> set[str]:
    """The role names in a getClient response."""
    client = (response.get("data") or {}).get("client") or {}
    return {str(role.get("rolename")) for role in client.get("roles") or []}


def _check(response: dict[str, Any], accept: Sequence[str]) -> None:
    error = response.get("error")
    if error and error not in accept:
        raise DynsecCommandError(str(response.get("command", "?")), str(error))


def role_commands(roles: Sequence[Role]) -> Iterator[dict[str, Any]]:
    """CreateRole commands for `roles` (what `freecar vehicle broker-setup` sends)."""
    for role in roles:
        yield {
            "command": "createRole",
            "rolename": role.rolename,
            "acls": [acl.as_json() for acl in role.acls],
        }
