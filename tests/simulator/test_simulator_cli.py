"""`freecar sim` end to end: a tester's command line against a real broker."""

import json
import signal
import socket
import subprocess
import time

import pytest
from sim_testing import WAIT_S, recorder, running_sim, sim_command, sim_env
from support.waiting import poll

from devstack.stack import DevStack
from freecar.cli import main
from protocol.acks import decode_ack
from protocol.broker_url import BrokerUrl
from protocol.commands import Action
from protocol.keys import SigningKey
from protocol.signing import CommandSigner
from protocol.topics import Topic

# Long enough for a 10 s run, its ramp-up and its drain on a loaded machine.
RUN_TIMEOUT_S = 60.0


def _isolated(root: str) -> list[str]:
    return ["--topic-root", root, "--client-prefix", f"{root}-", "--progress-interval", "0"]


def test_summary_counts_match_what_the_broker_delivered(
    any_stack: DevStack, mqtt_topic_root: str
) -> None:
    url = any_stack.info.mqtt_url
    with recorder(url, mqtt_topic_root) as seen:
        done = subprocess.run(
            sim_command(
                "--vehicles", "50", "--duration", "10", "--json", *_isolated(mqtt_topic_root)
            ),
            env=sim_env(url),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        # The subscriber may still be reading the last messages the broker forwarded.
        poll(lambda: len(seen.unique()) >= summary["unique_fixes_acked"], timeout=WAIT_S)
        unique = seen.unique()
    assert summary["broker_reachable"] is True
    assert summary["max_connected"] == 50
    assert summary["vehicles"] == 50
    assert summary["errors"] == 0
    assert summary["backlog_at_exit"] == 0
    assert summary["unique_fixes_acked"] >= 50  # at least each car's first fix
    assert len(unique) == summary["unique_fixes_acked"]
    assert summary["fixes_enqueued"] == summary["unique_fixes_acked"]  # drained completely
    per_vehicle = {f"sim-{n:04d}": 0 for n in range(1, 51)}
    for vid, _seq in unique:
        per_vehicle[vid] += 1
    assert per_vehicle == summary["unique_fixes_acked_per_vehicle"]
    assert summary["exit_code"] == 0


def test_commands_change_the_car_and_show_in_its_next_fix(
    devstack: DevStack, mqtt_topic_root: str
) -> None:
    key = SigningKey.generate()
    signer = CommandSigner(key)
    root = mqtt_topic_root
    vid = "sh-0001"
    # The theft scenario keeps its car parked and locked (even while it is towed), so the
    # only lock changes are the ones these commands make.
    args = [
        "--vehicles", "1", "--scenario", "theft", "--id-format", "sh-{n:04d}",
        "--trusted-key", key.verifying_key.to_paserk(), *_isolated(root),
    ]  # fmt: skip
    with (
        recorder(devstack.info.mqtt_url, root) as seen,
        running_sim(args, sim_env(devstack.info.mqtt_url)) as sim,
    ):
        assert poll(lambda: bool(seen.fixes_of(vid))), "the car never reported"
        assert seen.fixes_of(vid)[0]["locked"] is True
        command_topic = Topic.command(vid, root=root).value
        for action, locked in ((Action.UNLOCK, False), (Action.LOCK, True)):
            before = len(seen.fixes_of(vid))
            command = signer.sign(vid, action, ttl_s=60)
            seen.publish(command_topic, command.payload)
            assert poll(
                lambda c=command: any(a["cmd_id"] == str(c.cmd_id) for a in seen.acks_of(vid))
            )
            ack = next(
                decode_ack(json.dumps(a).encode())
                for a in seen.acks_of(vid)
                if a["cmd_id"] == str(command.cmd_id)
            )
            assert ack.status == "done"
            assert ack.locked is locked
            assert poll(lambda n=before: len(seen.fixes_of(vid)) > n)
            assert seen.fixes_of(vid)[before]["locked"] is locked
        sim.send_signal(signal.SIGTERM)
        out, err = sim.communicate(timeout=RUN_TIMEOUT_S)
    assert sim.returncode == 0, err
    summary = out.strip().splitlines()[-1]
    assert "2 commands done" in summary


def test_unreachable_broker_exits_1_quickly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on `port` now: every CONNECT is refused.
    started = time.monotonic()
    done = subprocess.run(
        sim_command(
            "--vehicles", "5", "--duration", "60", "--connect-timeout", "2", "--json",
            "--progress-interval", "0",
        ),
        env=sim_env(f"mqtt://car:secret@127.0.0.1:{port}"),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    assert "no car could connect" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["broker_reachable"] is False
    assert summary["errors"] > 0
    assert summary["exit_code"] == 1


def test_a_refused_login_exits_1(devstack: DevStack, mqtt_topic_root: str) -> None:
    broker = BrokerUrl.parse(devstack.info.mqtt_url)
    wrong = f"mqtt://{broker.username}:not-the-password@{broker.host}:{broker.port}"
    done = subprocess.run(
        sim_command("--vehicles", "2", "--duration", "30", "--connect-timeout", "3",
                    *_isolated(mqtt_topic_root)),
        env=sim_env(wrong),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "no car could connect" in done.stderr


def test_per_vehicle_logins_from_a_credentials_file(
    devstack: DevStack, mqtt_topic_root: str, tmp_path
) -> None:
    broker = BrokerUrl.parse(devstack.info.mqtt_url)
    good = {"username": broker.username, "password": broker.password}
    bad = {"username": broker.username, "password": "wrong"}
    logins = {"sim-0001": good, "sim-0002": good, "sim-0003": bad}
    credentials = tmp_path / "logins.json"
    credentials.write_text(json.dumps(logins))
    # The URL's own login is wrong: only the file's logins can get the first two in.
    url = f"mqtt://nobody:nothing@{broker.host}:{broker.port}"
    with recorder(devstack.info.mqtt_url, mqtt_topic_root) as seen:
        done = subprocess.run(
            sim_command("--vehicles", "3", "--duration", "4", "--drain-timeout", "1", "--json",
                        "--credentials",
                        str(credentials), *_isolated(mqtt_topic_root)),
            env=sim_env(url),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert poll(lambda: {vid for vid, _ in seen.unique()} == {"sim-0001", "sim-0002"})
    assert summary["max_connected"] == 2
    assert summary["unique_fixes_acked_per_vehicle"]["sim-0003"] == 0
    assert summary["errors"] >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "meteor"], "unknown scenario"),
        (["--area", "atlantis"], "neither a city"),
        (["--vehicles", "0"], "at least 1"),
        (["--rate", "-1"], "--rate must be positive"),
        (["--id-format", "car {n}"], "id-format"),
        (["--id-format", "car-{x}"], "id-format"),
        (["--id-format", "car"], "same id"),
        (["--trusted-key", "k4.public.nope"], "PASERK"),
        (["--topic-root", "a/+/b"], "root"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FREECAR_MQTT_URL", "mqtt://u:p@127.0.0.1:1")
    assert main(["sim", *args]) == 2
    assert message.lower() in capsys.readouterr().err.lower()


def test_a_bad_agent_setting_in_the_environment_exits_2(capsys, monkeypatch) -> None:
    monkeypatch.setenv("FREECAR_MQTT_URL", "mqtt://u:p@127.0.0.1:1")
    monkeypatch.setenv("FREECAR_AGENT_KEEPALIVE_S", "1")
    assert main(["sim", "--vehicles", "1", "--memory-queue"]) == 2
    assert "keepalive_s" in capsys.readouterr().err


def test_no_broker_configured_exits_2(capsys, monkeypatch) -> None:
    monkeypatch.delenv("FREECAR_MQTT_URL", raising=False)
    assert main(["sim"]) == 2
    assert "FREECAR_MQTT_URL" in capsys.readouterr().err


def test_missing_logins_in_the_credentials_file_exit_2(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FREECAR_MQTT_URL", "mqtt://u:p@127.0.0.1:1")
    credentials = tmp_path / "logins.json"
    credentials.write_text(json.dumps({"sim-0001": {"username": "a", "password": "b"}}))
    assert main(["sim", "--vehicles", "2", "--credentials", str(credentials)]) == 2
    assert "no login for 1 cars, e.g. sim-0002" in capsys.readouterr().err
