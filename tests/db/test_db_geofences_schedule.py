"""Geofence schedules: weekday windows in a time zone, overnight windows, DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from db.geofences import Schedule

SHANGHAI = ZoneInfo("Asia/Shanghai")


def schedule(**fields: object) -> Schedule:
    return Schedule.model_validate({"tz": "Asia/Shanghai", **fields})


def local(day: int, hour: int, minute: int = 0, tz: ZoneInfo = SHANGHAI) -> datetime:
    """A wall-clock time in the week of Monday 2 March 2026 (day 1 = Monday)."""
    return datetime(2026, 3, 1 + day, hour, minute, tzinfo=tz)


def test_a_daytime_window_on_weekdays() -> None:
    office = schedule(days=[1, 2, 3, 4, 5], **{"from": "08:30", "to": "18:00"})
    assert not office.is_active(local(1, 8, 29))
    assert office.is_active(local(1, 8, 30))
    assert office.is_active(local(5, 17, 59))
    assert not office.is_active(local(5, 18, 0))  # the end is excluded
    assert not office.is_active(local(6, 12))  # Saturday


def test_an_overnight_window_belongs_to_the_day_it_starts() -> None:
    friday_night = schedule(days=[5], **{"from": "22:00", "to": "06:00"})
    assert not friday_night.is_active(local(5, 21, 59))
    assert friday_night.is_active(local(5, 22, 0))
    assert friday_night.is_active(local(6, 5, 59))  # Saturday morning: Friday's window
    assert not friday_night.is_active(local(6, 6, 0))
    assert not friday_night.is_active(local(5, 3, 0))  # Friday morning: Thursday's, not set
    assert not friday_night.is_active(local(6, 23, 0))


def test_from_equal_to_is_the_whole_day_and_the_default_is_always() -> None:
    sundays = schedule(days=[7], **{"from": "00:00", "to": "00:00"})
    assert sundays.is_active(local(7, 0, 0))
    assert sundays.is_active(local(7, 23, 59))
    assert not sundays.is_active(local(1, 0, 0))
    always = schedule()
    assert all(always.is_active(local(day, hour)) for day in range(1, 8) for hour in (0, 12, 23))


def test_the_window_is_in_the_schedules_time_zone() -> None:
    morning = schedule(days=[1], **{"from": "07:00", "to": "09:00"})
    # 07:30 in Shanghai is 23:30 UTC on Sunday.
    assert morning.is_active(datetime(2026, 3, 1, 23, 30, tzinfo=UTC))
    assert not morning.is_active(datetime(2026, 3, 2, 7, 30, tzinfo=UTC))


def test_daylight_saving_follows_the_wall_clock() -> None:
    # Berlin moves to summer time on Sunday 29 March 2026 at 02:00 (01:00 UTC).
    berlin = Schedule.model_validate(
        {"days": [7], "from": "08:00", "to": "09:00", "tz": "Europe/Berlin"}
    )
    assert berlin.is_active(datetime(2026, 3, 22, 7, 30, tzinfo=UTC))  # winter: UTC+1
    assert not berlin.is_active(datetime(2026, 3, 29, 7, 30, tzinfo=UTC))  # 09:30 local
    assert berlin.is_active(datetime(2026, 3, 29, 6, 30, tzinfo=UTC))  # summer: UTC+2


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        schedule().is_active(datetime(2026, 3, 2, 12, 0))  # noqa: DTZ001 - on purpose


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"days": []}, "schedule_days"),
        ({"days": [0]}, "schedule_days"),
        ({"days": [8]}, "schedule_days"),
        ({"days": [1, 1]}, "schedule_days"),
        ({"from": "24:00"}, "schedule_time"),
        ({"to": "7:00"}, "schedule_time"),
        ({"from": "07:00:00"}, "schedule_time"),
        ({"tz": "Mars/Olympus_Mons"}, "unknown_time_zone"),
        ({"tz": "../../etc/passwd"}, "unknown_time_zone"),
        ({"weekends": True}, "extra_forbidden"),
    ],
)
def test_bad_schedules_are_refused_with_their_code(fields: dict[str, object], code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        schedule(**fields)
    assert [e["type"] for e in caught.value.errors()] == [code]


def test_a_schedule_is_stored_with_from_and_to() -> None:
    stored = schedule(days=[3, 1], **{"from": "22:00", "to": "06:00"}).to_json()
    assert stored == {"days": [1, 3], "from": "22:00", "to": "06:00", "tz": "Asia/Shanghai"}
    assert Schedule.model_validate(stored).to_json() == stored


hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
# hypothesis takes naive bounds and makes aware datetimes from them.
moments = st.datetimes(
    min_value=datetime(2020, 1, 1),  # noqa: DTZ001
    max_value=datetime(2035, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


def brute_force(window: Schedule, at: datetime) -> bool:
    """The window's definition, literally: some listed day's [from, from + length) holds `at`."""
    start_h, start_m = map(int, window.start.split(":"))
    end_h, end_m = map(int, window.end.split(":"))
    length = ((end_h * 60 + end_m) - (start_h * 60 + start_m)) % (24 * 60) or 24 * 60
    here = at.astimezone(ZoneInfo(window.tz)).replace(tzinfo=None)
    for back in (0, 1):
        day = (here - timedelta(days=back)).date()
        if day.isoweekday() not in window.days:
            continue
        opens = datetime(day.year, day.month, day.day, start_h, start_m)  # noqa: DTZ001 - wall clock
        if opens <= here.replace(second=0, microsecond=0) < opens + timedelta(minutes=length):
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(
    days=st.sets(st.integers(1, 7), min_size=1),
    start=hhmm,
    end=hhmm,
    tz=st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC"]),
    at=moments,
)
def test_is_active_matches_the_definition(
    days: set[int], start: str, end: str, tz: str, at: datetime
) -> None:
    window = Schedule.model_validate({"days": sorted(days), "from": start, "to": end, "tz": tz})
    assert window.is_active(at) == brute_force(window, at)
