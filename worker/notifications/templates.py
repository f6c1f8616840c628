"""What a notification says: a plain-text subject and body per event kind.

Templates are `string.Template`s over the event's fields (`$vehicle_id`, `$plate`, `$kind`,
`$ts`, `$lat`, `$lon`, `$geofence_id`, `$event_id`, `$maps_url`) and its details (`$fuel_pct`,
`$moved_m`, ...). A field the event lacks reads `n/a`; a kind without its own template gets
the generic one, which lists every detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from worker.notifications.repository import EventRow

MISSING: Final = "n/a"


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered notification."""

    subject: str
    body: str


_WHERE: Final = "Where: $lat, $lon  $maps_url\nWhen: $ts\nEvent: #$event_id\n"

# kind -> (subject, body); the body is followed by the common "where and when" lines.
TEMPLATES: Final[dict[str, tuple[str, str]]] = {
    "moving_while_locked": (
        "ALARM: $plate ($vehicle_id) is moving while locked",
        (
            "Vehicle $plate ($vehicle_id) is locked and moved $moved_m m (speed $speed_kmh km/h):"
            " a tow truck or a theft. An immobilize command has been queued if the rule says so."
        ),
    ),
    "door_open_while_locked": (
        "ALARM: $plate ($vehicle_id) has a door open while locked",
        "Vehicle $plate ($vehicle_id) reports a door open while it is locked.",
    ),
    "left_service_area": (
        "$plate ($vehicle_id) left the service area",
        "Vehicle $plate ($vehicle_id) left the service area (geofence $geofence_id).",
    ),
    "entered_restricted": (
        "$plate ($vehicle_id) entered a restricted area",
        "Vehicle $plate ($vehicle_id) entered restricted geofence $geofence_id.",
    ),
    "overspeed": (
        "$plate ($vehicle_id) is speeding",
        (
            "Vehicle $plate ($vehicle_id) drove at $speed_kmh km/h (max $max_speed_kmh) over the"
            " limit of $limit_kmh km/h for $over_for_s s."
        ),
    ),
    "low_fuel": (
        "$plate ($vehicle_id) is low on fuel ($fuel_pct%)",
        "Vehicle $plate ($vehicle_id) has $fuel_pct% fuel left: send someone to refuel it.",
    ),
    "low_battery": (
        "$plate ($vehicle_id) is low on battery ($battery_pct%)",
        "Vehicle $plate ($vehicle_id) has $battery_pct% battery left: send someone to charge it.",
    ),
    "offline": (
        "$plate ($vehicle_id) went offline",
        "Vehicle $plate ($vehicle_id) stopped reporting. Its last known position is below.",
    ),
    "command_failed": (
        "Command $action to $plate ($vehicle_id) $status",
        (
            "The $action command $cmd_id (issued by $issued_by) to vehicle $plate ($vehicle_id)"
            " ended $status: $reason."
        ),
    ),
}

_GENERIC: Final = ("$plate ($vehicle_id): $kind", "Vehicle $plate ($vehicle_id): $kind.")


class _Fields(dict[str, str]):
    """Template fields; one the event lacks reads `n/a` rather than failing the send."""

    def __missing__(self, key: str) -> str:
        return MISSING


def _text(value: object) -> str:
    return MISSING if value is None else str(value)


def fields(event: EventRow) -> dict[str, str]:
    """The values templates may use, as text."""
    values = _Fields({key: _text(value) for key, value in event.details.items()})
    maps = (
        ""
        if event.lat is None or event.lon is None
        else f"https://www.openstreetmap.org/?mlat={event.lat}&mlon={event.lon}#map=17/"
        f"{event.lat}/{event.lon}"
    )
    values.update(
        event_id=str(event.id),
        vehicle_id=event.vehicle_id,
        plate=event.plate or event.vehicle_id,
        kind=event.kind,
        ts=event.ts.isoformat(),
        lat=_text(event.lat),
        lon=_text(event.lon),
        geofence_id=_text(event.geofence_id),
        maps_url=maps,
    )
    return values


def render(event: EventRow) -> Message:
    """The subject and body for this event."""
    subject, body = TEMPLATES.get(event.kind, _GENERIC)
    values = fields(event)
    text = Template(body).substitute(values) + "\n\n" + Template(_WHERE).substitute(values)
    if event.kind not in TEMPLATES and event.details:
        text += "Details:\n" + "".join(
            f"  {key}: {_text(value)}\n" for key, value in sorted(event.details.items())
        )
    # A subject is one line: a newline in a detail must not start a new mail header.
    one_line = " ".join(Template(subject).substitute(values).split())
    return Message(one_line, text)
