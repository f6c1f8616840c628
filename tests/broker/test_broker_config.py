"""broker/mosquitto.conf, the production broker's policy, checked and run by the real Mosquitto.

The compose stack never starts in the tests, so a setting Mosquitto refuses would first be
found in production: the machine's Mosquitto is started here with the file as it is, only
the port and the installation's paths changed, and it must accept a login.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from devstack.accounts import running_as_root
from devstack.binaries import MosquittoBinaries, find_broker
from devstack.credentials import BrokerLogins
from devstack.errors import DevStackError
from devstack.modes import Mode
from devstack.mosquitto import dynamic_security_config
from devstack.mqtt_probe import CONNACK_ACCEPTED, connack_code
from devstack.ports import LOOPBACK, free_port

CONF = Path(__file__).resolve().parents[2] / "broker" / "mosquitto.conf"
COMPOSE_CONF_D = "/mosquitto/config/conf.d"
# Mosquitto starts in milliseconds; this only bounds a failure on a loaded machine.
START_TIMEOUT_S = 15.0


def _settings(text: str) -> dict[str, list[str]]:
    """Each option's values (an option may repeat), comments and blank lines skipped."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            found.setdefault(key, []).append(value.strip())
    return found


def test_the_policy_persists_promptly_and_drops_nothing_by_default() -> None:
    settings = _settings(CONF.read_text())
    assert settings["allow_anonymous"] == ["false"]
    assert settings["persistence"] == ["true"]
    # Mosquitto's default saves every 30 minutes: a crash would lose that much state.
    assert 0 < int(settings["autosave_interval"][0]) <= 30
    assert settings["autosave_on_changes"] == ["false"]
    # The default of 1000 queued messages per client drops the rest silently.
    assert int(settings["max_queued_messages"][0]) >= 100_000
    assert settings["max_packet_size"] == [str(1 << 20)]
    assert settings["include_dir"] == [COMPOSE_CONF_D]


def test_mosquitto_runs_the_production_config(tmp_path: Path) -> None:
    try:
        binaries = find_broker(Mode.SYSTEM)
    except DevStackError as exc:
        pytest.skip(f"no system Mosquitto with dynamic security: {exc}")
    assert isinstance(binaries, MosquittoBinaries)
    logins = BrokerLogins.generate()
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    dynsec = tmp_path / "dynamic-security.json"
    dynsec.write_text(json.dumps(dynamic_security_config(logins)))
    # What broker/conf.d/dynamic-security.conf says, with this machine's paths.
    (conf_d / "dynamic-security.conf").write_text(
        f"plugin {binaries.dynsec_plugin}\n"
        f"plugin_opt_config_file {dynsec}\n"
        f"persistence_location {tmp_path}/\n" + ("user root\n" if running_as_root() else "")
    )
    port = free_port()
    text = CONF.read_text()
    assert text.count("listener 1883\n") == 1
    text = text.replace("listener 1883\n", f"listener {port} {LOOPBACK}\n")
    text = text.replace(f"include_dir {COMPOSE_CONF_D}", f"include_dir {conf_d}")
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    log_path = tmp_path / "mosquitto.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(binaries.path), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        service = logins.service
        while connack_code(port, service.username, service.password) != CONNACK_ACCEPTED:
            assert process.poll() is None, f"mosquitto refused the config:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"mosquitto never answered:\n{log_path.read_text()}"
            time.sleep(0.05)
        assert connack_code(port) != CONNACK_ACCEPTED  # anonymous clients refused
    finally:
        process.terminate()
        process.wait(START_TIMEOUT_S)
