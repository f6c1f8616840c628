"""The search's own settings (`FREECAR_API_BOOKING_BUFFER_S`), read once per process."""

from __future__ import annotations

from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SearchSettings(BaseSettings):
    """Availability rules that operators tune."""

    model_config = SettingsConfigDict(env_prefix="FREECAR_API_", extra="ignore")

    # A returned car needs a look, a wipe and sometimes a charge before the next rider; 15
    # minutes is what operators schedule, and it absorbs a rider who returns a little late.
    booking_buffer_s: int = Field(default=900, ge=0, le=86_400)
    """FREECAR_API_BOOKING_BUFFER_S: free time kept before and after every booking."""


@cache
def search_settings() -> SearchSettings:
    """The process's search settings (read from the environment on first use)."""
    return SearchSettings()
