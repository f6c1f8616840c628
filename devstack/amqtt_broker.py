"""The fallback MQTT broker: amqtt, run through its own command-line script (with a fix).

amqtt speaks MQTT 3.1.1 only and misroutes `$share/...` filters, so a stack running it
reports `mqtt_shared_subscriptions=False`. Its FileAuthPlugin accepts the same two logins
as Mosquitto (anonymous clients are refused), but it has no ACLs and no dynamic security
API: the admin login is only a login here. Nor does it bind logins to client ids: every
client logs in as the service login, so any client may connect under any id and take that
client's session (its auth plugins see the id, but the password file is read once at start,
so there is no login per car to bind it to). It keeps everything in memory, so a restart
forgets retained messages and persistent sessions.
"""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING

from devstack.mqtt_probe import CONNACK_ACCEPTED, connack_code
from devstack.ports import LOOPBACK
from devstack.service import Service

if TYPE_CHECKING:
    from pathlib import Path

    from devstack.binaries import AmqttRuntime
    from devstack.credentials import BrokerLogins

# amqtt's broker script, with its replay of retained messages fixed (see the module).
BROKER_SCRIPT = "devstack.amqtt_runner"
FILE_AUTH_PLUGIN = "amqtt.plugins.authentication.FileAuthPlugin"
# amqtt checks passwords synchronously inside its event loop. argon2's defaults (64 MiB,
# 3 passes) cost about 90 ms per CONNECT and would serialise a simulated fleet's connect
# storm; these cost under a millisecond, which is plenty for a loopback throwaway broker.
ARGON2_TIME_COST = 1
ARGON2_MEMORY_KIB = 1024
ARGON2_PARALLELISM = 1


def password_file(logins: BrokerLogins) -> str:
    """`username:argon2-hash` lines for amqtt's FileAuthPlugin."""
    # Optional dependency of the `embedded` extra: imported only when amqtt is used.
    from pwdlib.hashers.argon2 import Argon2Hasher  # noqa: PLC0415 - optional extra

    hasher = Argon2Hasher(
        time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM
    )
    return "".join(
        f"{login.username}:{hasher.hash(login.password)}\n"
        for login in (logins.service, logins.admin)
    )


class AmqttBroker(Service):
    """amqtt on 127.0.0.1 in a child Python process."""

    name = "amqtt"
    # amqtt's script shuts the broker down cleanly on KeyboardInterrupt, i.e. SIGINT.
    stop_signal = signal.SIGINT

    def __init__(
        self,
        runtime: AmqttRuntime,
        logins: BrokerLogins,
        *,
        workdir: Path,
        log_path: Path,
        ready_timeout: float,
    ) -> None:
        super().__init__(workdir=workdir, log_path=log_path, ready_timeout=ready_timeout)
        self.runtime = runtime
        self.logins = logins
        self.config_path = workdir / "amqtt.json"
        self.passwd_path = workdir / "passwd"

    def prepare(self) -> None:
        """Write the password file once and the config (JSON is YAML) for the current port."""
        self.workdir.mkdir(exist_ok=True)
        if not self.passwd_path.exists():
            self.passwd_path.write_text(password_file(self.logins))
            self.passwd_path.chmod(0o600)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{LOOPBACK}:{self.port}"}},
            # Listing plugins replaces amqtt's defaults, which allow anonymous clients.
            "plugins": {FILE_AUTH_PLUGIN: {"password_file": str(self.passwd_path)}},
        }
        self.config_path.write_text(json.dumps(config, indent=2))

    def command(self) -> list[str]:
        """Run amqtt's broker script with this interpreter."""
        return [str(self.runtime.python), "-m", BROKER_SCRIPT, "-c", str(self.config_path)]

    def is_ready(self) -> bool:
        """Whether the broker accepts the service login."""
        login = self.logins.service
        return connack_code(self.port, login.username, login.password) == CONNACK_ACCEPTED
