"""The broker's side of fleet management: vehicle logins pushed, retired ones refused.

Only ever called after the database has committed what it pushes (see `api.work`): the
database is the record, and the broker follows it. A push that fails is reported, never
raised: the car is created or retired all the same, and rotating its login (or retiring it
again) retries. Calls to Mosquitto's dynamic-security plugin block, so they run in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from broker.provisioning import DynsecClient, ProvisioningError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from api.fleet.settings import FleetSettings

log = logging.getLogger(__name__)

NOT_CONFIGURED: Final = (
    "FREECAR_MQTT_ADMIN_URL is not set, so the broker was not told; the login is stored and "
    "can be pushed later (rotate-credentials) once the broker is Mosquitto with the "
    "dynamic-security plugin"
)


@dataclass(frozen=True, slots=True)
class Login:
    """A vehicle login issued in a unit of work; the password leaves only in the response."""

    vehicle_id: str
    password: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the broker said to one change."""

    ok: bool
    error: str | None


def _provision(settings: FleetSettings, logins: Sequence[Login]) -> dict[str, Outcome]:
    admin_url = settings.mqtt_admin_url.get_secret_value()
    if not admin_url:
        unsent = Outcome(ok=False, error=NOT_CONFIGURED)
        return dict.fromkeys((login.vehicle_id for login in logins), unsent)
    outcomes: dict[str, Outcome] = {}
    try:
        with DynsecClient(admin_url, timeout_s=settings.fleet_dynsec_timeout_s) as dynsec:
            for login in logins:
                try:
                    dynsec.provision_vehicle(
                        login.vehicle_id, login.password, root=settings.topic_root
                    )
                    outcomes[login.vehicle_id] = Outcome(ok=True, error=None)
                except ProvisioningError as exc:
                    outcomes[login.vehicle_id] = Outcome(ok=False, error=str(exc))
    # OSError and ValueError too: a broker that resets the connection, or an address paho
    # cannot use, must be reported like any other broker failure, never become a 500.
    except (ProvisioningError, OSError, ValueError) as exc:
        log.warning("vehicle logins not provisioned on the broker: %s", exc)
        for login in logins:
            outcomes.setdefault(login.vehicle_id, Outcome(ok=False, error=str(exc)))
    return outcomes


async def provision(settings: FleetSettings, logins: Sequence[Login]) -> dict[str, Outcome]:
    """Give the broker these committed logins; its answer for each vehicle id."""
    if not logins:
        return {}
    return await asyncio.to_thread(_provision, settings, logins)


def _disable(settings: FleetSettings, vehicle_id: str) -> Outcome:
    admin_url = settings.mqtt_admin_url.get_secret_value()
    if not admin_url:
        return Outcome(ok=False, error=NOT_CONFIGURED)
    try:
        with DynsecClient(admin_url, timeout_s=settings.fleet_dynsec_timeout_s) as dynsec:
            dynsec.disable_vehicle(vehicle_id)
    except (ProvisioningError, OSError, ValueError) as exc:
        log.warning("vehicle %s not disabled on the broker: %s", vehicle_id, exc)
        return Outcome(ok=False, error=str(exc))
    return Outcome(ok=True, error=None)


async def disable(settings: FleetSettings, vehicle_id: str) -> Outcome:
    """Make the broker refuse a committed retirement's login."""
    return await asyncio.to_thread(_disable, settings, vehicle_id)
