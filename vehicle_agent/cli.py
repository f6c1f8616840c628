"""Run the in-car agent: publish telemetry, queue it while offline, execute signed commands.

Configuration comes from a TOML file (--config, or $FREECAR_AGENT_CONFIG) overlaid by
FREECAR_AGENT_* environment variables, which win. Keys are the same in both places:

  # /etc/freecar/agent.toml (readable by the agent's user only: it holds the broker login)
  vehicle_id = "car-42"
  mqtt_url = "mqtts://car-42:s3cret@mqtt.example.com:8883"
  trusted_keys = ["k4.public.JuYqc5592PAZ6Q5EUJbGieBJZ8kfiYm0S6vzzPMfXEE"]
  position_backend = "gpsd"        # sim | gpsd
  status_backend = "can"           # sim | can
  actuator_backend = "can"         # sim | can
  queue_path = "/var/lib/freecar/agent.sqlite3"
  moving_interval_s = 5            # a fix every 5 s while driving
  parked_interval_s = 60           # every minute while parked

  FREECAR_AGENT_VEHICLE_ID=car-7 freecar agent --config agent.toml   # env overrides file

With the sim backends and no simulator, the agent is a car parked at sim_lat/sim_lon:
handy to try a broker or the hub. Every key, with its default: `freecar agent --show-config`
(the broker password is masked).

Logs go to stderr. SIGINT or SIGTERM stops the agent cleanly: it publishes its retained
`offline` status and disconnects; fixes not yet acknowledged stay in the queue file.

Exit codes: 0 after a clean stop, 1 for a configuration that cannot be used (missing or
invalid key, unreadable file, a backend that is not installed), 2 for bad arguments, 3 when
a backend fails to start (CAN bus missing or silent): a service manager should retry.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from vehicle_agent.config import AgentConfig

EXIT_OK = 0
EXIT_BAD_CONFIG = 1
EXIT_BACKEND_FAILED = 3
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the agent's options."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="TOML configuration file (default: $FREECAR_AGENT_CONFIG, else environment only)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=os.environ.get("FREECAR_AGENT_LOG_LEVEL", "info").lower(),
        help="how much to log to stderr (default: $FREECAR_AGENT_LOG_LEVEL, else info)",
    )
    parser.add_argument(
        "--show-config",
        action="store_true",
        help="print the effective configuration as JSON (password masked) and exit",
    )


def run(args: argparse.Namespace) -> int:
    """Load the configuration, then run the agent until SIGINT or SIGTERM."""
    # Loaded here so `freecar --help` stays fast.
    from vehicle_agent.config import AgentConfig, ConfigError

    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # paho's per-packet lines are noise unless debugging the MQTT link itself.
    if args.log_level != "debug":
        logging.getLogger("vehicle_agent.mqtt").setLevel(logging.WARNING)
    try:
        config = AgentConfig.load(args.config)
    except ConfigError as exc:
        print(f"freecar agent: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.show_config:
        print(json.dumps(config.redacted(), indent=2))
        return EXIT_OK
    return _run_agent(config)


def _run_agent(config: AgentConfig) -> int:
    import asyncio
    import signal
    import sqlite3

    from vehicle_agent.agent import build_agent
    from vehicle_agent.backends.base import BackendError

    log = logging.getLogger("vehicle_agent")
    try:
        agent = build_agent(config)
    except ImportError as exc:
        print(f"freecar agent: a configured backend is not installed: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except (OSError, sqlite3.Error) as exc:
        print(f"freecar agent: cannot open the queue {config.queue_path}: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        log.info(
            "agent %s starting: broker %s, topic root %s, queue %s",
            config.vehicle_id,
            config.broker.redacted(),
            config.topic_root,
            config.queue_path or "in memory",
        )
        try:
            await agent.run()
        except asyncio.CancelledError:
            log.info("stopped; %d fixes wait in the queue", len(agent.queue))

    try:
        asyncio.run(main())
    except BackendError as exc:
        print(f"freecar agent: a backend failed to start ({exc.reason}): {exc}", file=sys.stderr)
        return EXIT_BACKEND_FAILED
    finally:
        agent.queue.close()
    return EXIT_OK
