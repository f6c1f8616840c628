"""Vehicle search under load: `GET /v1/vehicles` on a real `freecar api` server process.

10,000 vehicles with live positions around Shanghai, bookings over the next week,
maintenance windows and ratings. An open-loop load generator (a minimal asyncio HTTP/1.1
client, see LeanHttp) sends searches at fixed offered rates: each request leaves at its
scheduled time whether or not earlier ones have answered, and its latency counts from that
time, so a server falling behind shows as latency instead of silently lowering the rate.
The baseline is the same search query run bare through psycopg, one at a time. CPU per
request is read from /proc for the generator, the API process and the database backends.

Runnable alone: `python -m bench.bench_search [--quick]` (prints, writes nothing) or
`python -m bench --only search`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import psycopg

from bench.report import Report, Result, line_chart

if TYPE_CHECKING:
    from devstack.stack import DevStack

SUITE = "vehicle search"
VEHICLES = 10_000
RATES = (50, 100, 200, 400)
P99_TARGET_MS = 50.0
# Around People's Square; a standard deviation of ~9 km puts most cars inside the Outer Ring.
CENTRE = (31.2304, 121.4737)
SPREAD_DEG = (0.08, 0.10)
RADIUS_M = 2_000
FEATURES = ("child_seat", "usb", "gps", "bluetooth", "roof_rack", "pet_friendly")
CATEGORIES = ("economy", "standard", "luxury", "suv", "electric")
SORTS = ("distance", "price", "rating")
SERVER_START_TIMEOUT_S = 60.0
# Enough connections that the generator never queues at 400 req/s with 100 ms answers;
# past that the server is the queue, which is what an open-loop test should show.
MAX_CONNECTIONS = 256
# Connections of the API's pool. Two cores run the API, PostgreSQL and the load generator;
# more concurrent backends than cores only interleave queries (measured: 10 backends spent
# about twice the CPU per search of a single one), they do not add throughput.
POOL_MAX = int(os.environ.get("BENCH_SEARCH_POOL_MAX", "4"))
# A new backend fills its catalog caches and plans its first executions itself (custom
# plans before the generic one); the baseline measures a warm connection, as the API's are.
WARM_UP_QUERIES = 30


def _seed(url: str, rng: random.Random) -> dict[str, int]:
    """Vehicles, live positions, bookings, maintenance and ratings; counts of each."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    ids = [f"sh-{i:05d}" for i in range(VEHICLES)]
    statuses = rng.choices(
        ["available", "maintenance", "rented", "retired"], weights=[95, 3, 1, 1], k=VEHICLES
    )
    with psycopg.connect(url) as conn:
        user = conn.execute(
            "INSERT INTO users (wechat_openid) VALUES ('bench:seed') RETURNING id"
        ).fetchone()
        assert user is not None
        with conn.cursor().copy(
            "COPY vehicles (id, plate, make, model, category, fuel_type, features,"
            " price_hour_minor, price_day_minor, currency, status) FROM STDIN"
        ) as copy:
            for i, vid in enumerate(ids):
                category = rng.choice(CATEGORIES)
                price = rng.randrange(1_500, 9_000, 100)
                copy.write_row(
                    (
                        vid,
                        f"沪A{i:05d}",
                        "BYD",
                        "Qin",
                        category,
                        "electric" if category == "electric" else "petrol",
                        rng.sample(FEATURES, rng.randint(0, 3)),
                        price,
                        price * 7,
                        "CNY",
                        statuses[i],
                    )
                )
        with conn.cursor().copy(
            "COPY vehicle_state (vehicle_id, ts, seq, lat, lon, fuel_pct, locked, doors_open,"
            " engine_on, online, last_seen_at) FROM STDIN"
        ) as copy:
            for vid in ids:
                copy.write_row(
                    (
                        vid,
                        now,
                        1,
                        rng.gauss(CENTRE[0], SPREAD_DEG[0]),
                        rng.gauss(CENTRE[1], SPREAD_DEG[1]),
                        rng.uniform(10, 100),
                        True,
                        False,
                        False,
                        True,
                        now,
                    )
                )
        # Two to four bookings per car over the next week, one after another.
        bookings = []
        for vid in ids:
            start = now + timedelta(hours=rng.randint(0, 12))
            for _ in range(rng.randint(2, 4)):
                length = timedelta(hours=rng.randint(1, 8))
                bookings.append((vid, user[0], start, start + length))
                start += length + timedelta(hours=rng.randint(1, 36))
        with conn.cursor().copy("COPY bookings (vehicle_id, user_id, period) FROM STDIN") as copy:
            for vid, uid, starts, ends in bookings:
                copy.write_row((vid, uid, f"[{starts.isoformat()},{ends.isoformat()})"))
        windows = rng.sample(ids, VEHICLES // 20)
        with conn.cursor().copy(
            "COPY maintenance_windows (vehicle_id, period, reason) FROM STDIN"
        ) as copy:
            for vid in windows:
                starts = now + timedelta(hours=rng.randint(0, 160))
                copy.write_row(
                    (
                        vid,
                        f"[{starts.isoformat()},{(starts + timedelta(hours=4)).isoformat()})",
                        "service",
                    )
                )
        ratings = [(rng.choice(ids), user[0], rng.randint(1, 5)) for _ in range(30_000)]
        conn.cursor().executemany(
            "INSERT INTO vehicle_ratings (vehicle_id, user_id, stars) VALUES (%s, %s, %s)",
            ratings,
        )
    # The state autovacuum keeps a live database in: statistics, hint bits and a visibility
    # map (without one, every index-only probe of the search also reads the table).
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return {"bookings": len(bookings), "maintenance": len(windows), "ratings": len(ratings)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_server(stack: DevStack, url: str, port: int) -> subprocess.Popen[bytes]:
    """`freecar api` on `port`: the production code path, rate limits off for the load test."""
    env = {
        **os.environ,
        **stack.env(),
        "FREECAR_DATABASE_URL": url,
        "FREECAR_API_RATE_LIMITS": "false",
        "FREECAR_API_PORT": str(port),
        "FREECAR_API_DB_POOL_MAX": str(POOL_MAX),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "freecar", "api", "--log-level", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
    )


async def _wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"freecar api exited with {server.returncode}")
            try:
                if (await client.get("/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("freecar api did not become ready")


def _search_params(rng: random.Random, now: datetime) -> dict[str, Any]:
    """A rider's search: somewhere in the city, a 2-hour window in the next three days."""
    starts = now + timedelta(minutes=15 * rng.randint(4, 288))
    params: dict[str, Any] = {
        "lat": rng.gauss(CENTRE[0], SPREAD_DEG[0] / 2),
        "lon": rng.gauss(CENTRE[1], SPREAD_DEG[1] / 2),
        "radius_m": RADIUS_M,
        "from": starts.isoformat(),
        "to": (starts + timedelta(hours=2)).isoformat(),
        "sort": rng.choice(SORTS),
        "limit": 20,
    }
    if rng.random() < 0.2:
        params["category"] = rng.choice(CATEGORIES)
    return params


def _cpu_s(pids: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) each live process has used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return used


class CpuMeter:
    """Where the CPU goes during a step: load generator, API server, PostgreSQL backends."""

    def __init__(self, url: str, server_pid: int) -> None:
        self._url = url
        self._server = server_pid
        self._start: tuple[float, dict[int, float], dict[int, float]] = (0.0, {}, {})

    def _backends(self) -> set[int]:
        with psycopg.connect(self._url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        return {int(pid) for (pid,) in rows}

    def start(self) -> None:
        """Take the starting readings."""
        self._start = (time.process_time(), _cpu_s({self._server}), _cpu_s(self._backends()))

    def stop(self) -> tuple[float, float, float]:
        """CPU seconds since start: (load generator, API server, PostgreSQL backends)."""
        client0, server0, pg0 = self._start
        client = time.process_time() - client0
        server = sum(_cpu_s({self._server}).values()) - sum(server0.values())
        # Backends the pool opened during the step count from zero.
        pg = sum(now - pg0.get(pid, 0.0) for pid, now in _cpu_s(self._backends()).items())
        return client, server, pg


def _percentile(values: list[float], share: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


class LeanHttp:
    """A minimal keep-alive HTTP/1.1 GET client for the timed load.

    The load generator shares the machine with what it measures, so its own CPU must stay
    small: httpx.AsyncClient measured 3 to 10 ms of CPU per request here (as much as the
    server), this about a tenth of that. httpx still does the untimed calls (sign-in).
    """

    def __init__(self, host: str, port: int, max_connections: int) -> None:
        self._host = host
        self._port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def _exchange(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
    ) -> tuple[int, bytes]:
        reader, writer = conn
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await reader.readexactly(length)

    async def get(self, target: bytes, headers: bytes) -> tuple[int, bytes]:
        """GET `target` (path and query); the status and body."""
        request = b"GET " + target + b" HTTP/1.1\r\nHost: bench\r\n" + headers + b"\r\n"
        async with self._slots:
            reused = bool(self._idle)
            conn = (
                self._idle.pop()
                if reused
                else await asyncio.open_connection(self._host, self._port)
            )
            try:
                answer = await self._exchange(conn, request)
            except (OSError, asyncio.IncompleteReadError):
                conn[1].close()
                if not reused:
                    raise
                # The server closed an idle keep-alive connection: once more on a new one.
                conn = await asyncio.open_connection(self._host, self._port)
                answer = await self._exchange(conn, request)
            self._idle.append(conn)
            return answer

    async def close(self) -> None:
        """Close every idle connection."""
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _offer(  # noqa: PLR0913 - one load step's knobs
    client: LeanHttp,
    token: str,
    rate: int,
    seconds: float,
    rng: random.Random,
    *,
    path: str = "/v1/vehicles",
) -> tuple[float, list[float], int, int]:
    """Open-loop load at `rate` for `seconds`: achieved req/s, latencies (ms), errors, found."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    count = int(rate * seconds)
    # Encoded before the clock starts: the generator's CPU goes to sending, not formatting.
    searching = path == "/v1/vehicles"
    targets = [
        f"{path}?{urlencode(_search_params(rng, now), doseq=True)}".encode()
        if searching
        else path.encode()
        for _ in range(count)
    ]
    headers = f"Authorization: Bearer {token}\r\n".encode()
    latencies: list[float] = []
    errors = 0
    found = 0
    started = time.perf_counter()

    async def one(index: int) -> None:
        nonlocal errors, found
        due = started + index / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        try:
            status, body = await client.get(targets[index], headers)
        except (OSError, ValueError, asyncio.IncompleteReadError):
            errors += 1
            return
        if status != 200:
            errors += 1
            return
        # From the scheduled time: a late start is the server's (or the machine's) delay.
        latencies.append((time.perf_counter() - due) * 1000)
        found += body.count(b'"distance_m"')

    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, errors, found


def _bare_query(rng: random.Random, now: datetime) -> Any:  # noqa: ANN401 - a SearchQuery
    """A search as the repository takes it, with the load generator's parameters."""
    from api.vehicles import repository

    params = _search_params(rng, now)
    window_from = datetime.fromisoformat(params["from"])
    window_to = datetime.fromisoformat(params["to"])
    return repository.SearchQuery(
        lat=params["lat"],
        lon=params["lon"],
        radius_m=float(RADIUS_M),
        categories=[params["category"]] if "category" in params else None,
        features=[],
        price_max=None,
        window_from=window_from,
        window_to=window_to,
        busy_from=window_from - timedelta(minutes=15),
        busy_to=window_to + timedelta(minutes=15),
        sort=params["sort"],
        distance_grain_m=100.0,
        after=None,
        limit=21,
    )


async def _bare_sql(url: str, count: int, rng: random.Random) -> tuple[list[float], float]:
    """The search's SQL alone, one query after another on one connection.

    Latency of each (ms), and the backend's CPU per query (ms).
    """
    from api.vehicles import repository

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    latencies = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        backend = {conn.info.backend_pid}
        for _ in range(WARM_UP_QUERIES):
            await repository.search(conn, _bare_query(rng, now))
        cpu_before = sum(_cpu_s(backend).values())
        for _ in range(count):
            query = _bare_query(rng, now)
            began = time.perf_counter()
            await repository.search(conn, query)
            latencies.append((time.perf_counter() - began) * 1000)
        cpu_ms = (sum(_cpu_s(backend).values()) - cpu_before) / count * 1000
    return latencies, cpu_ms


async def _load(  # noqa: PLR0913 - one suite's knobs
    report: Report,
    base: str,
    url: str,
    meter: CpuMeter,
    *,
    seconds: float,
    rates: tuple[int, ...],
) -> list[tuple[int, float, float, float]]:
    rng = random.Random(11)
    bare, bare_cpu = await _bare_sql(url, 100 if seconds < 1 else 500, rng)
    bare_p50, bare_p99 = _percentile(bare, 0.5), _percentile(bare, 0.99)
    note = f"one connection, one query at a time; PostgreSQL CPU {bare_cpu:.1f} ms per query"
    report.add(Result(SUITE, "bare SQL search, p50", bare_p50, "ms", note=note))
    report.add(Result(SUITE, "bare SQL search, p99", bare_p99, "ms"))
    rows = []
    async with httpx.AsyncClient(base_url=base) as signer:
        signed = await signer.post("/v1/auth/dev-login", json={"username": "bench"})
        token = signed.json()["access_token"]
    host, port = base.removeprefix("http://").split(":")
    client = LeanHttp(host, int(port), MAX_CONNECTIONS)
    try:
        # Warm up: connections, the pool, prepared statements, caches.
        await _offer(client, token, 50, 1.0, rng)
        # What every authenticated request costs before any domain work: GET /v1/me.
        meter.start()
        achieved, latencies, errors, _ = await _offer(
            client, token, 100, seconds, rng, path="/v1/me"
        )
        cpu = [used / max(1, len(latencies)) * 1000 for used in meter.stop()]
        note = (
            f"p50 {_percentile(latencies, 0.5):.1f} ms, p99 {_percentile(latencies, 0.99):.1f} ms;"
            f" {errors} errors; CPU ms per request: load generator {cpu[0]:.1f}, "
            f"API {cpu[1]:.1f}, PostgreSQL {cpu[2]:.1f}"
        )
        report.add(Result(SUITE, "GET /v1/me at 100 req/s (reference)", achieved, "req/s", note))
        for rate in rates:
            meter.start()
            achieved, latencies, errors, found = await _offer(client, token, rate, seconds, rng)
            cpu = [used / max(1, len(latencies)) * 1000 for used in meter.stop()]
            p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
            verdict = "meets" if p99 <= P99_TARGET_MS else "misses"
            note = (
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({verdict} {P99_TARGET_MS:.0f} ms); "
                f"{errors} errors; {found / max(1, len(latencies)):.1f} cars per answer; "
                f"CPU ms per search: load generator {cpu[0]:.1f}, API {cpu[1]:.1f}, "
                f"PostgreSQL {cpu[2]:.1f}; machine load average {os.getloadavg()[0]:.1f}"
            )
            report.add(Result(SUITE, f"offered {rate} req/s: achieved", achieved, "req/s", note))
            report.add(
                Result(
                    SUITE, f"offered {rate} req/s: p50", p50, "ms", baseline="bare SQL search, p50"
                )
            )
            report.add(
                Result(
                    SUITE, f"offered {rate} req/s: p99", p99, "ms", baseline="bare SQL search, p99"
                )
            )
            rows.append((rate, achieved, p50, p99))
    finally:
        await client.close()
    return rows


def run(report: Report, stack: DevStack, pictures: Path | None, *, quick: bool) -> None:
    """Seed a database on `stack`, serve it with `freecar api`, measure, record, draw."""
    from db.migrate import migrate

    url = stack.create_database("bench_search")
    migrate(url)
    rng = random.Random(5)
    started = time.perf_counter()
    counts = _seed(url, rng)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT geo_search_path()").fetchone()
    path = row[0] if row else "?"
    report.context["Vehicle search index"] = path
    print(
        f"  seeded {VEHICLES:,} vehicles, {counts['bookings']:,} bookings, "
        f"{counts['maintenance']:,} maintenance windows, {counts['ratings']:,} ratings "
        f"in {time.perf_counter() - started:.1f}s; search index: {path}",
        flush=True,
    )
    port = _free_port()
    server = _start_server(stack, url, port)
    try:
        base = f"http://127.0.0.1:{port}"
        asyncio.run(_wait_ready(base, server))
        meter = CpuMeter(url, server.pid)
        seconds = 1.0 if quick else 10.0
        rows = asyncio.run(_load(report, base, url, meter, seconds=seconds, rates=RATES))
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    if pictures is not None:
        line_chart(
            report,
            SUITE,
            pictures / "search-load.png",
            x_label="offered searches/s",
            y_label="ms (from scheduled send)",
            series={
                "p50": [(float(rate), p50) for rate, _, p50, _ in rows],
                "p99": [(float(rate), p99) for rate, _, _, p99 in rows],
                f"target p99 {P99_TARGET_MS:.0f} ms": [
                    (float(rate), P99_TARGET_MS) for rate, *_ in rows
                ],
            },
        )


def main(argv: list[str] | None = None) -> int:
    """Run the search benchmark alone on private services and print it."""
    from devstack.stack import start_stack

    parser = argparse.ArgumentParser(prog="python -m bench.bench_search", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 s per rate instead of 10")
    args = parser.parse_args(argv)
    report = Report()
    with start_stack() as stack:
        run(report, stack, None, quick=args.quick)
    for result in report.results:
        if result.note:
            print(f"    {result.case}: {result.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
