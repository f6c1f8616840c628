"""A rule changed while a hub runs decides the very next event, without waiting for a sweep.

The hub's silence sweep (which also reloads the rules) is an hour away in this test: only
the NOTIFY of the `event_rules` trigger (migration 0055) can tell the hub. A locked car
whose fixes move 300 m raises `moving_while_locked`; the command the hub issues for it
shows which rule it applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
from hub_testing import (
    hub_settings,
    publish_theft,
    query_rows,
    running_hub,
    seed_vehicles,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from hub_testing import Publisher

    from devstack.stack import DevStack

# Far beyond the test's length: a rule reloaded here was not reloaded by the sweep.
SWEEP_NEVER_S = 3600.0


def _steal(pub: Publisher, url: str, car: str, root: str) -> list[str]:
    """A locked car parked, then moved 300 m; the actions commanded for its event."""
    publish_theft(pub, car, root)
    wait_until(
        lambda: query_rows(
            url,
            "SELECT 1 FROM events WHERE vehicle_id = %s AND kind = 'moving_while_locked'",
            car,
        ),
        what=f"the theft of {car} stored",
    )
    # The command, if any, was issued in the transaction that stored the event.
    rows = query_rows(url, "SELECT action FROM vehicle_commands WHERE vehicle_id = %s", car)
    return [str(action) for (action,) in rows]


def _change_rules(url: str, statement: str) -> None:
    """What an operator (or the API) does: a plain change to `event_rules`, committed."""
    with psycopg.connect(url) as conn:
        conn.execute(statement)


def test_a_rule_changed_while_the_hub_runs_decides_the_next_event(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    first, second, third = f"{root}-a", f"{root}-b", f"{root}-c"
    seed_vehicles(url, [first, second, third])
    settings = hub_settings(
        devstack,
        database_url=url,
        redis_url=redis_url,
        root=root,
        hub_sweep_interval_s=SWEEP_NEVER_S,
    )
    with running_hub(settings):
        pub = publisher(devstack.info.mqtt_url)
        # The default rule, loaded when the hub started.
        assert _steal(pub, url, first, root) == ["immobilize"]

        _change_rules(
            url,
            "UPDATE event_rules SET command = 'honk'"
            " WHERE kind = 'moving_while_locked' AND geofence_id IS NULL",
        )
        assert _steal(pub, url, second, root) == ["honk"]

        # Deleting the kind's default rule leaves the kind doing nothing.
        _change_rules(
            url,
            "DELETE FROM event_rules WHERE kind = 'moving_while_locked' AND geofence_id IS NULL",
        )
        assert _steal(pub, url, third, root) == []
