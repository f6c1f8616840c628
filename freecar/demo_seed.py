"""The demo's fleet: cars in central Shanghai, a service area and parking zones.

Deterministic for a given seed, and idempotent: seeding an already seeded database changes
nothing, so `freecar demo` can be started again against the same database.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

CITY = "Shanghai"
CURRENCY = "CNY"
# Shanghai plates: 沪 + issuing letter + five characters; new-energy cars get a D (pure
# electric) or F (hybrid) in front of five digits. I and O are never used.
PLATE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"


@dataclass(frozen=True, slots=True)
class Model:
    """A car model in the demo fleet, with its rental prices in fen (CNY minor units).

    Category, fuel type and features are the API's vocabulary (api/fleet/schemas.py): the
    seed writes to the database directly, and a test checks every car against the API.
    """

    make: str
    model: str
    category: str
    fuel_type: str
    seats: int
    price_hour_minor: int
    price_day_minor: int
    features: tuple[str, ...]


MODELS = (
    Model("Wuling", "Hongguang Mini EV", "economy", "electric", 4, 1500, 9800, ("bluetooth",)),
    Model("Volkswagen", "Lavida", "economy", "petrol", 5, 2500, 15800, ("bluetooth",)),
    Model(
        "BYD", "Qin Plus DM-i", "standard", "hybrid", 5, 3000, 18800, ("bluetooth", "backup_camera")
    ),
    Model(
        "Toyota",
        "Corolla Hybrid",
        "standard",
        "hybrid",
        5,
        3200,
        19800,
        ("bluetooth", "backup_camera"),
    ),
    Model("BYD", "Dolphin", "electric", "electric", 5, 3000, 18800, ("bluetooth", "backup_camera")),
    Model(
        "Tesla",
        "Model 3",
        "electric",
        "electric",
        5,
        5500,
        38800,
        ("bluetooth", "backup_camera", "fast_charging"),
    ),
    Model(
        "NIO",
        "ES6",
        "suv",
        "electric",
        5,
        6500,
        45800,
        ("bluetooth", "backup_camera", "child_seat"),
    ),
    Model(
        "Honda",
        "CR-V",
        "suv",
        "petrol",
        5,
        4500,
        29800,
        ("bluetooth", "backup_camera", "child_seat"),
    ),
    Model(
        "Buick",
        "GL8",
        "suv",
        "petrol",
        7,
        5800,
        39800,
        ("bluetooth", "backup_camera", "child_seat"),
    ),
    Model(
        "BMW",
        "3 Series",
        "luxury",
        "petrol",
        5,
        8000,
        56800,
        ("bluetooth", "backup_camera", "heated_seats"),
    ),
)


def load_geofences() -> list[dict[str, Any]]:
    """Load the demo city's geofences as GeoJSON features."""
    text = resources.files("freecar.demo_data").joinpath("shanghai.geojson").read_text("utf-8")
    features: list[dict[str, Any]] = json.loads(text)["features"]
    return features


def _plate(rng: random.Random, fuel_type: str) -> str:
    if fuel_type == "electric":
        return "沪A·D" + "".join(rng.choices("0123456789", k=5))
    if fuel_type == "hybrid":
        return "沪A·F" + "".join(rng.choices("0123456789", k=5))
    return "沪A·" + "".join(rng.choices(PLATE_ALPHABET, k=5))


def demo_vehicles(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Build `count` demo vehicles parked around the city's parking zones."""
    rng = random.Random(seed)  # noqa: S311 - demo data, reproducible on purpose
    zones = [f for f in load_geofences() if f["properties"]["kind"] == "parking_zone"]
    vehicles: list[dict[str, Any]] = []
    plates: set[str] = set()
    for number in range(1, count + 1):
        model = MODELS[rng.randrange(len(MODELS))]
        plate = _plate(rng, model.fuel_type)
        while plate in plates:
            plate = _plate(rng, model.fuel_type)
        plates.add(plate)
        lon, lat = zones[number % len(zones)]["geometry"]["coordinates"]
        # Within about 150 m of the zone's centre: a degree of latitude is ~111 km.
        vehicles.append(
            {
                "id": f"sh-{number:04d}",
                "plate": plate,
                "make": model.make,
                "model": model.model,
                "year": rng.randint(2019, 2025),
                "category": model.category,
                "fuel_type": model.fuel_type,
                "seats": model.seats,
                "features": list(model.features),
                "price_hour_minor": model.price_hour_minor,
                "price_day_minor": model.price_day_minor,
                "currency": CURRENCY,
                "home_lat": lat + rng.uniform(-0.0013, 0.0013),
                "home_lon": lon + rng.uniform(-0.0015, 0.0015),
                "mileage_km": round(rng.uniform(2_000, 80_000), 1),
            }
        )
    return vehicles


def seed_demo(database_url: str, vehicles: int = 60, seed: int = 7) -> int:
    """Insert the demo fleet and geofences where missing; return how many cars are new."""
    fleet = demo_vehicles(vehicles, seed)
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO vehicles (id, plate, make, model, year, category, fuel_type, seats,
                                  features, price_hour_minor, price_day_minor, currency,
                                  home_lat, home_lon, mileage_km)
            VALUES (%(id)s, %(plate)s, %(make)s, %(model)s, %(year)s, %(category)s,
                    %(fuel_type)s, %(seats)s, %(features)s, %(price_hour_minor)s,
                    %(price_day_minor)s, %(currency)s, %(home_lat)s, %(home_lon)s,
                    %(mileage_km)s)
            ON CONFLICT (id) DO NOTHING
            """,
            fleet,
            returning=False,
        )
        new_cars = cur.rowcount
        for feature in load_geofences():
            props = feature["properties"]
            cur.execute(
                """
                INSERT INTO geofences (name, kind, geometry, radius_m)
                SELECT %s, %s, %s, %s
                WHERE NOT EXISTS (SELECT 1 FROM geofences WHERE name = %s)
                """,
                (
                    props["name"],
                    props["kind"],
                    Jsonb(feature["geometry"]),
                    props.get("radius_m"),
                    props["name"],
                ),
            )
        conn.commit()
    return max(new_cars, 0)


def demo_fleet(database_url: str, vehicles: int = 60, seed: int = 7) -> list[dict[str, str]]:
    """The demo's cars as `freecar sim --fleet` reads them: each id with its stored fuel type.

    Read back from the database, not the seed: a car seeded by an earlier run keeps what it
    was given then, and the simulated car must report what the inventory says it runs on.
    """
    ids = [car["id"] for car in demo_vehicles(vehicles, seed)]
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, fuel_type FROM vehicles WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    stored = {str(vid): str(fuel_type) for vid, fuel_type in rows}
    return [{"id": vid, "fuel_type": stored[vid]} for vid in ids if vid in stored]
