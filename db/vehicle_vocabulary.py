"""The words a vehicle record may use: categories, fuel types, features and statuses.

Defined once, next to the `vehicles` table whose CHECK constraints (0002_vehicles.sql) hold
the same categories, fuel types and statuses, so that fleet administration, the riders'
search and the demo's fleet all speak one vocabulary: a feature a car can carry is a
feature a rider can filter on, and nothing else is either.
"""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    """What riders search by (the `vehicles.category` CHECK)."""

    ECONOMY = "economy"
    STANDARD = "standard"
    LUXURY = "luxury"
    SUV = "suv"
    ELECTRIC = "electric"


class FuelType(StrEnum):
    """What the car runs on (the `vehicles.fuel_type` CHECK)."""

    PETROL = "petrol"
    DIESEL = "diesel"
    HYBRID = "hybrid"
    ELECTRIC = "electric"


class Feature(StrEnum):
    """The fixed vocabulary of equipment a car carries and riders filter on."""

    GPS = "gps"
    BLUETOOTH = "bluetooth"
    BACKUP_CAMERA = "backup_camera"
    CHILD_SEAT = "child_seat"
    USB_CHARGING = "usb_charging"
    APPLE_CARPLAY = "apple_carplay"
    ANDROID_AUTO = "android_auto"
    HEATED_SEATS = "heated_seats"
    SUNROOF = "sunroof"
    CRUISE_CONTROL = "cruise_control"
    PARKING_SENSORS = "parking_sensors"
    ROOF_RACK = "roof_rack"
    BIKE_RACK = "bike_rack"
    TOW_BAR = "tow_bar"
    ALL_WHEEL_DRIVE = "all_wheel_drive"
    AUTOMATIC = "automatic"
    PET_FRIENDLY = "pet_friendly"
    WHEELCHAIR_ACCESSIBLE = "wheelchair_accessible"
    DASHCAM = "dashcam"
    FAST_CHARGING = "fast_charging"


class VehicleStatus(StrEnum):
    """Where a vehicle is in its life (the `vehicles.status` CHECK)."""

    AVAILABLE = "available"
    RENTED = "rented"
    MAINTENANCE = "maintenance"
    RETIRED = "retired"
