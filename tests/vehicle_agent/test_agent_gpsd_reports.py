"""gpsd's JSON reports read into fixes, and how the source keeps the latest one."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vehicle_agent.backends.gpsd import GpsdPositionSource
from vehicle_agent.backends.gpsd_reports import GpsdFix, TpvReport, parse_report

# Lines as gpsd 3.22 wrote them in this project's gpsd tests (fed GGA and RMC sentences).
VERSION = b'{"class":"VERSION","release":"3.22","rev":"3.22","proto_major":3,"proto_minor":14}\r\n'
FIRST_TPV = (  # from a GGA, before any RMC gave the date: no time, speed or track
    b'{"class":"TPV","device":"/dev/pts/0","mode":3,"lat":31.200300000,"lon":121.400000000,'
    b'"altHAE":10.0000,"altMSL":10.0000,"alt":10.0000,"magvar":-6.1,"geoidSep":0.000,'
    b'"eph":17.100}\r\n'
)
TPV = (
    b'{"class":"TPV","device":"/dev/pts/0","mode":3,"time":"2026-11-25T07:37:00.840Z",'
    b'"ept":0.005,"lat":31.200400000,"lon":121.400000000,"altHAE":10.0000,"altMSL":10.0000,'
    b'"alt":10.0000,"track":45.0000,"magtrack":38.9475,"magvar":-6.1,"speed":5.144,'
    b'"climb":0.000,"eph":17.100,"sep":34.200}\r\n'
)
NO_FIX_TPV = b'{"class":"TPV","device":"/dev/pts/0","mode":1,"time":"2026-11-25T07:41:52.130Z"}'

no_deadline = settings(deadline=None)


def tpv(**fields: object) -> bytes:
    return json.dumps({"class": "TPV", "device": "/dev/gps0", **fields}).encode()


def test_a_full_tpv_becomes_a_fix_in_contract_units() -> None:
    report = parse_report(TPV)
    assert report == TpvReport(
        device="/dev/pts/0",
        fix=GpsdFix(lat=31.2004, lon=121.4, speed_kmh=5.144 * 3.6, heading=45.0, accuracy_m=17.1),
    )


def test_a_tpv_without_speed_is_no_usable_fix() -> None:
    assert parse_report(FIRST_TPV) == TpvReport(device="/dev/pts/0", fix=None)


@pytest.mark.parametrize("mode", [0, 1, None, "3", True])
def test_a_tpv_without_a_2d_fix_is_no_fix(mode: object) -> None:
    assert parse_report(tpv(mode=mode, lat=1.0, lon=2.0, speed=0.0)) == TpvReport(
        device="/dev/gps0", fix=None
    )


def test_a_2d_fix_is_enough() -> None:
    report = parse_report(tpv(mode=2, lat=-33.5, lon=-70.25, speed=0.0))
    assert report is not None
    assert report.fix == GpsdFix(-33.5, -70.25, 0.0, None, None)


@pytest.mark.parametrize(
    "fields",
    [
        {"lat": 91.0, "lon": 0.0},
        {"lat": 0.0, "lon": -180.5},
        {"lat": "1.0", "lon": 2.0},
        {"lon": 2.0},
        {"lat": 1.0, "lon": 2.0, "speed": -0.1},
        {"lat": 1.0, "lon": 2.0, "speed": 112.0},  # 403 km/h: a glitch, not a car
    ],
)
def test_impossible_values_are_no_fix(fields: dict[str, object]) -> None:
    report = parse_report(tpv(mode=3, **({"speed": 1.0} | fields)))
    assert report is not None
    assert report.fix is None


def test_per_axis_errors_stand_in_for_a_missing_eph() -> None:
    report = parse_report(tpv(mode=3, lat=1.0, lon=2.0, speed=1.0, epx=3.0, epy=4.0))
    assert report is not None
    assert report.fix is not None
    assert report.fix.accuracy_m == 5.0


def test_a_track_outside_the_compass_is_an_unknown_heading() -> None:
    report = parse_report(tpv(mode=3, lat=1.0, lon=2.0, speed=1.0, track=400.0))
    assert report is not None
    assert report.fix is not None
    assert report.fix.heading is None


@pytest.mark.parametrize(
    "line",
    [VERSION, b"", b"not json", b"\xff\xfe", b"[1, 2]", b'{"class": "SKY"}', b"[" * 100_000],
)
def test_anything_but_a_tpv_is_ignored(line: bytes) -> None:
    assert parse_report(line) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
tpv_fields = st.fixed_dictionaries(
    {"class": st.just("TPV")},
    optional=dict.fromkeys(
        ("mode", "lat", "lon", "speed", "track", "eph", "epx", "epy", "device"), json_values
    ),
)


@no_deadline
@given(st.binary(max_size=200) | tpv_fields.map(lambda d: json.dumps(d).encode()))
def test_odd_reports_never_raise_and_never_give_an_impossible_fix(line: bytes) -> None:
    report = parse_report(line)
    if report is None or report.fix is None:
        return
    fix = report.fix
    assert -90 <= fix.lat <= 90
    assert -180 <= fix.lon <= 180
    assert 0 <= fix.speed_kmh <= 400
    assert fix.heading is None or 0 <= fix.heading <= 360
    assert fix.accuracy_m is None or (math.isfinite(fix.accuracy_m) and fix.accuracy_m >= 0)


@no_deadline
@given(
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    speed=st.floats(0, 111),
    track=st.floats(0, 360),
    eph=st.floats(0, 1e4),
    mode=st.sampled_from([2, 3]),
)
def test_a_sane_tpv_round_trips(
    *, lat: float, lon: float, speed: float, track: float, eph: float, mode: int
) -> None:
    report = parse_report(tpv(mode=mode, lat=lat, lon=lon, speed=speed, track=track, eph=eph))
    assert report is not None
    assert report.fix == GpsdFix(lat, lon, speed * 3.6, track, eph)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_fix_goes_stale_after_max_age() -> None:
    clock = Clock()
    source = GpsdPositionSource(max_age_s=2.0, clock=clock)
    assert source.position() is None
    source.handle_line(TPV)
    clock.now += 2.0
    assert source.position() is not None
    clock.now += 0.01
    assert source.position() is None
    source.handle_line(TPV)
    assert source.position() is not None


def test_the_latest_tpv_wins_even_when_it_says_no_fix() -> None:
    source = GpsdPositionSource(clock=Clock())
    source.handle_line(TPV)
    source.handle_line(VERSION)  # other reports change nothing
    assert source.position() is not None
    source.handle_line(NO_FIX_TPV)
    assert source.position() is None


def test_heading_is_held_while_gpsd_gives_no_track() -> None:
    source = GpsdPositionSource(clock=Clock())
    source.handle_line(tpv(mode=3, lat=1.0, lon=2.0, speed=0.0))
    first = source.position()
    assert first is not None
    assert first.heading == 0.0  # never known yet: the contract's type needs a number
    source.handle_line(tpv(mode=3, lat=1.0, lon=2.0, speed=3.0, track=270.0))
    source.handle_line(tpv(mode=3, lat=1.0, lon=2.0, speed=0.0))
    held = source.position()
    assert held is not None
    assert held.heading == 270.0


def test_a_device_filter_ignores_other_receivers() -> None:
    source = GpsdPositionSource(device="/dev/gps1", clock=Clock())
    source.handle_line(tpv(mode=3, lat=1.0, lon=2.0, speed=0.0))  # from /dev/gps0
    assert source.position() is None
    source.handle_line(
        json.dumps(
            {"class": "TPV", "device": "/dev/gps1", "mode": 3, "lat": 1.0, "lon": 2.0, "speed": 0.0}
        ).encode()
    )
    assert source.position() is not None
