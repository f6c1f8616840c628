"""Logins on Mosquitto through its dynamic-security plugin (`$CONTROL/dynamic-security/v1`).

A small synchronous client: it logs in with the broker's admin account, sends a batch of
commands, and waits for the plugin's answer on `$CONTROL/dynamic-security/v1/response`
(matched by correlation data).

Every login FreeCar makes is bound to one client id (the plugin's `clientid`): a car's login
is its vehicle id and connects only as that id, a hub's login is its client id. Without
the binding any login could connect under any id and take over that client's session: a
car's login once took the hub's id and its persistent session with it (docs/operations.md).

Each vehicle gets a role of its own, `vehicle-<id>`, of literal ACLs: Mosquitto 2.0's plugin
does not substitute `%u` in role ACLs, so one shared role with patterns would match nothing.
Which topics a car publishes and which it reads come from one place, `roles.json`; the
car's role and the hub's are both made from it.

Brokers without the plugin (amqtt in the embedded devstack) never answer; that is reported
as `DynsecUnavailableError`, with a message saying so, after `timeout_s`.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocol.broker_url import BrokerUrl
from protocol.topics import check_root, check_vehicle_id, is_valid_vehicle_id

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = CONTROL_TOPIC + "/response"
HUB_ROLE: Final = "hub"
VEHICLE_ROLE_PREFIX: Final = "vehicle-"
# The plugin answers a local command batch in milliseconds; seconds mean the broker is not
# Mosquitto with the plugin (nothing ever answers) or is badly overloaded.
DEFAULT_TIMEOUT_S: Final = 3.0
# A role's ACLs beat the defaults; vehicles have one role, so any priority works. Explicit
# so that adding a shared deny role later has something to rank against.
VEHICLE_ROLE_PRIORITY: Final = 0
# The priority of every ACL FreeCar writes; the plugin reports it back, so roles compare
# equal only if it is part of what is written.
ACL_PRIORITY: Final = 0
# The plugin's own error strings (Mosquitto 2.0.x, src/plugins/dynamic-security).
CLIENT_EXISTS: Final = "Client already exists"
ROLE_EXISTS: Final = "Role already exists"
CLIENT_NOT_FOUND: Final = "Client not found"
# Mosquitto 2.0's plugin rewrites its whole JSON file after every change, and the broker
# serves nobody meanwhile: measured 18-36 ms per change with 2,000 logins on a 2-core
# machine, growing with the number of logins. Bulk changes go in messages this small so the
# pauses stay short (about 5 s each with 10,000 logins) and cars and hubs are served between.
BULK_CHUNK: Final = 20
# How long one change may take per login the broker holds, when waiting for a bulk answer:
# four times the measured 25 us, for a slower disk.
CHANGE_ALLOWANCE_PER_LOGIN_S: Final = 100e-6
# Hub client ids are also login names: letters, digits, `.`, `_` and `-` (a hostname fits),
# never an MQTT wildcard, `/` or `$`.
CLIENT_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_CLIENT_ID_RE: Final = re.compile(CLIENT_ID_PATTERN)
# A topic suffix under {root}/{vehicle_id}/ in roles.json: lowercase levels, no wildcard.
_SUFFIX_RE: Final = re.compile(r"^[a-z]+(/[a-z]+)*$")


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


class InvalidClientIdError(ProvisioningError, ValueError):
    """A client id that cannot also be a login name."""

    code = "invalid_client_id"


def check_client_id(client_id: str) -> str:
    """Return a hub's client id unchanged, or raise InvalidClientIdError."""
    if _CLIENT_ID_RE.fullmatch(client_id) is None:
        raise InvalidClientIdError(
            f"{client_id[:80]!r} cannot be a client id and login name: use 1 to 128 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )
    return client_id


@dataclass(frozen=True, slots=True)
class Acl:
    """One ACL of a role."""

    acltype: str
    topic: str
    allow: bool = True

    def as_json(self) -> dict[str, Any]:
        """The plugin's JSON for this ACL."""
        return {
            "acltype": self.acltype,
            "topic": self.topic,
            "allow": self.allow,
            "priority": ACL_PRIORITY,
        }


@dataclass(frozen=True, slots=True)
class Role:
    """A dynamic-security role: a name and its ACLs."""

    rolename: str
    acls: tuple[Acl, ...] = field(default_factory=tuple)

    def acls_json(self) -> list[dict[str, Any]]:
        """The plugin's JSON for the role's ACLs."""
        return [acl.as_json() for acl in self.acls]

    def held_by(self, acls: Iterable[dict[str, Any]]) -> bool:
        """Whether the ACLs the plugin reports for this role are exactly these."""
        return _acl_keys(acls) == _acl_keys(self.acls_json())


@dataclass(frozen=True, slots=True)
class TopicPolicy:
    """The topics under `{root}/{vehicle_id}/`: which a car publishes, which the hub sends it."""

    vehicle_publishes: tuple[str, ...]
    vehicle_reads: tuple[str, ...]


@functools.cache
def topic_policy() -> TopicPolicy:
    """The policy in `roles.json`, checked: topic suffixes only, each in one list."""
    text = resources.files("broker").joinpath("roles.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    policy = TopicPolicy(
        vehicle_publishes=tuple(data["vehicle_publishes"]),
        vehicle_reads=tuple(data["vehicle_reads"]),
    )
    suffixes = [*policy.vehicle_publishes, *policy.vehicle_reads]
    bad = [s for s in suffixes if not isinstance(s, str) or _SUFFIX_RE.fullmatch(s) is None]
    if bad or len(set(suffixes)) != len(suffixes):
        msg = f"broker/roles.json: bad or repeated topic suffixes {bad or suffixes}"
        raise ValueError(msg)
    return policy


def vehicle_role(vehicle_id: str, root: str) -> Role:
    """The role of one vehicle: publish its own topics, read what the hub sends it, literally."""
    own = f"{check_root(root)}/{check_vehicle_id(vehicle_id)}"
    policy = topic_policy()
    acls = [Acl("publishClientSend", f"{own}/{suffix}") for suffix in policy.vehicle_publishes]
    for suffix in policy.vehicle_reads:
        topic = f"{own}/{suffix}"
        acls += [
            Acl("subscribeLiteral", topic),
            Acl("unsubscribeLiteral", topic),
            Acl("publishClientReceive", topic),
        ]
    return Role(VEHICLE_ROLE_PREFIX + vehicle_id, tuple(acls))


def hub_role(root: str) -> Role:
    """The hub's role: every vehicle's topics in (plain or shared), what cars read out."""
    every = f"{check_root(root)}/+"
    policy = topic_policy()
    acls: list[Acl] = []
    for suffix in policy.vehicle_publishes:
        topic = f"{every}/{suffix}"
        acls += [
            Acl("subscribePattern", topic),
            Acl("subscribePattern", f"$share/+/{topic}"),
            Acl("publishClientReceive", topic),
        ]
    acls += [Acl("publishClientSend", f"{every}/{suffix}") for suffix in policy.vehicle_reads]
    return Role(HUB_ROLE, tuple(acls))


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    """What the broker now holds for a vehicle."""

    username: str
    rolename: str
    created: bool
    """False when the client existed and only its password, role and state were renewed."""


@dataclass(frozen=True, slots=True)
class LoginAudit:
    """What `sync_vehicle_logins` found and changed."""

    vehicles: int
    """Vehicle logins on the broker."""
    bound: int
    """Vehicle logins just bound to their vehicle id (made before logins were bound)."""
    roles_updated: int
    """Vehicle roles just made to match roles.json."""
    other_roots: int
    """Vehicle roles for another topic root, left as they are."""
    unbound: tuple[str, ...]
    """Other logins that may still connect under any client id (the admin's own excepted)."""


@dataclass(frozen=True, slots=True)
class SetupReport:
    """What `set_up` did: hub logins created or renewed, and the vehicle logins' audit."""

    hubs_created: tuple[str, ...]
    hubs_updated: tuple[str, ...]
    audit: LoginAudit


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
    def execute(
        self, commands: Sequence[dict[str, Any]], *, timeout_s: float | None = None
    ) -> list[dict[str, Any]]:
        """Send commands in one message; return one response per command, in order.

        A response with an `error` key is the plugin's refusal; callers decide which ones
        they accept. Raises DynsecUnavailableError when nothing answers within `timeout_s`
        (default: the client's).
        """
        timeout = self._timeout_s if timeout_s is None else timeout_s
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
                if not event.wait(timeout):
                    raise DynsecUnavailableError(
                        f"no answer on {RESPONSE_TOPIC} within {timeout:g} s: the broker "
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

    def execute_changes(self, commands: Sequence[dict[str, Any]], *, logins: int) -> None:
        """Apply many changes in small messages, waiting as long as the broker's size needs.

        `logins` is how many logins the broker holds: each change costs time in proportion.
        Raises DynsecCommandError on the first change the plugin refuses.
        """
        for start in range(0, len(commands), BULK_CHUNK):
            chunk = commands[start : start + BULK_CHUNK]
            allowance = len(chunk) * max(logins, 1) * CHANGE_ALLOWANCE_PER_LOGIN_S
            for response in self.execute(chunk, timeout_s=self._timeout_s + allowance):
                _check(response, ())

    # --- what FreeCar needs ---------------------------------------------------------------
    def ensure_role(self, role: Role) -> bool:
        """Create the role, or make its ACLs exactly the template's; True when it changed."""
        acls = role.acls_json()
        response = self.run(
            {"command": "createRole", "rolename": role.rolename, "acls": acls},
            accept=(ROLE_EXISTS,),
        )
        if response.get("error") != ROLE_EXISTS:
            return True
        held = self.run({"command": "getRole", "rolename": role.rolename})
        if role.held_by(((held.get("data") or {}).get("role") or {}).get("acls") or []):
            return False
        # One change replaces every ACL: ACLs a newer roles.json dropped go too.
        self.run({"command": "modifyRole", "rolename": role.rolename, "acls": acls})
        return True

    def provision_vehicle(self, vehicle_id: str, password: str, *, root: str) -> ProvisionResult:
        """Give the vehicle a login, bound to its id, with this password and its own role."""
        role = vehicle_role(vehicle_id, root)
        self.ensure_role(role)
        response = self.run(
            {
                "command": "createClient",
                "username": vehicle_id,
                "password": password,
                "clientid": vehicle_id,
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
        for result in self.execute(_renew(vehicle_id, password, client_id=vehicle_id)):
            _check(result, ())
        return ProvisionResult(vehicle_id, role.rolename, created=False)

    def ensure_service_login(
        self, username: str, password: str, role: Role, *, client_id: str
    ) -> bool:
        """Create (or renew the password, binding and role of) a service login such as a hub's.

        The login connects only under `client_id`. True when the login was created.
        """
        self.ensure_role(role)
        response = self.run(
            {
                "command": "createClient",
                "username": username,
                "password": password,
                "clientid": client_id,
                "textname": f"FreeCar {role.rolename} {client_id}",
                "roles": [{"rolename": role.rolename}],
            },
            accept=(CLIENT_EXISTS,),
        )
        if response.get("error") != CLIENT_EXISTS:
            return True
        commands = _renew(username, password, client_id=client_id)
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

    def sync_vehicle_logins(self, root: str) -> LoginAudit:
        """Bind every vehicle login to its id and make its role match roles.json.

        Logins made before the binding existed, and roles made from an older roles.json,
        are brought up to date; the rest costs nothing. A role whose topics are under
        another root is left alone. Also lists the other logins that may connect under any
        client id.
        """
        clients = self._list("listClients", "clients")
        roles = {str(r.get("rolename")): r for r in self._list("listRoles", "roles")}
        changes: list[dict[str, Any]] = []
        vehicles = bound = updated = other_roots = 0
        unbound: list[str] = []
        for client in clients:
            username = str(client.get("username"))
            rolename = VEHICLE_ROLE_PREFIX + username
            if not is_valid_vehicle_id(username) or rolename not in _roles_of(client):
                # The admin login in use stays unbound on purpose: it can create any login,
                # bound or not, so a binding would protect nothing, and the API opens
                # several admin connections at once.
                if not client.get("clientid") and username != self._url.username:
                    unbound.append(username)
                continue
            vehicles += 1
            if client.get("clientid") != username:
                changes.append(
                    {"command": "modifyClient", "username": username, "clientid": username}
                )
                bound += 1
            role = vehicle_role(username, root)
            held = roles.get(rolename)
            held_acls = [] if held is None else held.get("acls") or []
            if not _for_root(held_acls, f"{root}/{username}/"):
                other_roots += 1  # not this root's car: test runs share a broker, roots apart
                continue
            if held is None or not role.held_by(held_acls):
                verb = "createRole" if held is None else "modifyRole"
                changes.append({"command": verb, "rolename": rolename, "acls": role.acls_json()})
                updated += 1
        self.execute_changes(changes, logins=len(clients))
        return LoginAudit(vehicles, bound, updated, other_roots, tuple(sorted(unbound)))

    def set_up(self, *, hubs: Sequence[str], hub_password: str, root: str) -> SetupReport:
        """What `freecar vehicle broker-setup` does, in order; safe to repeat.

        A login per hub client id (named after it, bound to it, role `hub`, `hub_password`),
        deny by default, then every vehicle login bound and its role made current.
        """
        for hub in hubs:
            check_client_id(hub)
        created: list[str] = []
        updated: list[str] = []
        for hub in hubs:
            made = self.ensure_service_login(hub, hub_password, hub_role(root), client_id=hub)
            (created if made else updated).append(hub)
        self.deny_by_default()
        audit = self.sync_vehicle_logins(root)
        return SetupReport(tuple(created), tuple(updated), audit)

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

    def _list(self, command: str, key: str) -> list[dict[str, Any]]:
        """Every client or role, with details (the plugin lists all when no count is given)."""
        response = self.run({"command": command, "verbose": True})
        items = (response.get("data") or {}).get(key) or []
        return [item for item in items if isinstance(item, dict)]

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


def _renew(username: str, password: str, *, client_id: str) -> list[dict[str, Any]]:
    """Commands giving an existing login a new password and its binding, and enabling it."""
    return [
        {
            "command": "modifyClient",
            "username": username,
            "password": password,
            "clientid": client_id,
        },
        {"command": "enableClient", "username": username},
    ]


def _for_root(acls: Sequence[dict[str, Any]], prefix: str) -> bool:
    """Whether a vehicle role's ACLs are under `prefix` (`{root}/{id}/`), or it has none."""
    return not acls or any(str(acl.get("topic", "")).startswith(prefix) for acl in acls)


def _roles_of(client: dict[str, Any]) -> set[str]:
    return {str(role.get("rolename")) for role in client.get("roles") or []}


def _client_roles(response: dict[str, Any]) -> set[str]:
    """The role names in a getClient response."""
    return _roles_of((response.get("data") or {}).get("client") or {})


def _acl_keys(acls: Iterable[dict[str, Any]]) -> set[tuple[str, str, bool, int]]:
    return {
        (
            str(acl.get("acltype")),
            str(acl.get("topic")),
            bool(acl.get("allow")),
            int(acl.get("priority") or 0),
        )
        for acl in acls
    }


def _check(response: dict[str, Any], accept: Sequence[str]) -> None:
    error = response.get("error")
    if error and error not in accept:
        raise DynsecCommandError(str(response.get("command", "?")), str(error))
