"""The inventory as the hub sees it: which vehicles it takes telemetry from, and registration.

`vehicles` belongs to fleet ops (the API); the hub only reads it, except for the opt-in
registration of unknown vehicles (`FREECAR_HUB_REGISTER_UNKNOWN`, for trials).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, LiteralString, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    import psycopg

# Channel of migration 0062's trigger; the payload is `<active|retired|gone> <vehicle id>`
# (`reload` after a TRUNCATE).
VEHICLES_CHANNEL: Final = "freecar_vehicles"
LISTEN_VEHICLES: Final[LiteralString] = "LISTEN freecar_vehicles"

# What a vehicle registered by the hub says about itself: the hub knows only its id and
# what its first fix reported. It is parked in `maintenance` (riders never see it) with no
# price (`XXX` is ISO 4217's "no currency"), the id standing in for the plate (unique, and
# plainly not a real plate), make and model left empty, until staff fill them in.
REGISTERED_NOTE: Final = (
    "Registered by a hub from its telemetry (FREECAR_HUB_REGISTER_UNKNOWN): the plate is the "
    "vehicle id; make, model and prices are not known; category and fuel type are guessed "
    "from its first fix. Fill them in, then make it available."
)

_ACTIVE_VEHICLES: LiteralString = "SELECT id FROM vehicles WHERE status <> 'retired'"

_STANDINGS: LiteralString = """
    SELECT id, status = 'retired' FROM vehicles WHERE id = ANY(%(vehicle_ids)s)
"""

# ON CONFLICT without a target: a taken id or plate (someone registered it meanwhile, or a
# real car's plate happens to equal this id) is skipped, and the vehicle stays unknown.
_REGISTER: LiteralString = """
    INSERT INTO vehicles (id, plate, make, model, category, fuel_type, price_hour_minor,
                          price_day_minor, currency, status, notes)
    SELECT v.id, v.id, '', '', v.category, v.fuel_type, 0, 0, 'XXX', 'maintenance', %(notes)s
    FROM unnest(%(id)s::text[], %(category)s::text[], %(fuel_type)s::text[])
         AS v(id, category, fuel_type)
    ON CONFLICT DO NOTHING
    RETURNING id
"""


class NewVehicle(NamedTuple):
    """A vehicle the hub registers: its id, and a category and fuel type from its fix."""

    id: str
    category: str
    fuel_type: str


def active_vehicles(conn: psycopg.Connection[Any]) -> set[str]:
    """The ids of every vehicle that is not retired."""
    return {vid for (vid,) in conn.execute(_ACTIVE_VEHICLES).fetchall()}


def standings(conn: psycopg.Connection[Any], vehicle_ids: Collection[str]) -> dict[str, bool]:
    """Whether each of these vehicles is retired; vehicles not in the inventory are absent."""
    rows = conn.execute(_STANDINGS, {"vehicle_ids": list(vehicle_ids)}).fetchall()
    return dict(rows)


def register(conn: psycopg.Connection[Any], vehicles: Sequence[NewVehicle]) -> set[str]:
    """Insert vehicles the hub heard of (see `REGISTERED_NOTE`); return the ids inserted."""
    if not vehicles:
        return set()
    params = {
        "id": [v.id for v in vehicles],
        "category": [v.category for v in vehicles],
        "fuel_type": [v.fuel_type for v in vehicles],
        "notes": REGISTERED_NOTE,
    }
    return {vid for (vid,) in conn.execute(_REGISTER, params).fetchall()}
