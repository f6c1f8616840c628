"""Run the benchmark suite on private services and write docs/benchmarks.md.

Every suite is bounded (a fixed row count or a few seconds per case), so the whole run
takes about a minute on a 2-core machine, plus up to three for the simulator's scale steps
and about one and a half for the hub's.
Numbers are compared as ratios within one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import bench_geofences, bench_hub, bench_protocol, bench_search, bench_sim, bench_storage
from bench.report import Report, bar_chart, write_markdown
from db.migrate import migrate
from devstack.stack import start_stack

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main(argv: list[str] | None = None) -> int:
    """Run every suite, print results as they come, write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a tenth of the work: checks it runs, not speed"
    )
    parser.add_argument(
        "--out", type=Path, default=DOCS / "benchmarks.md", help="where to write the report"
    )
    parser.add_argument(
        "--only",
        choices=["geofences", "search"],
        help="run one suite (search starts its own services), print it, leave the report alone",
    )
    args = parser.parse_args(argv)
    if args.only == "geofences":
        return bench_geofences.main(["--quick"] if args.quick else [])
    if args.only == "search":
        return bench_search.main(["--quick"] if args.quick else [])
    rows = 20_000 if args.quick else 200_000
    seconds = 0.2 if args.quick else 2.0
    report = Report()
    started = time.perf_counter()

    print("[1/4] protocol decoding", flush=True)
    bench_protocol.run(report, seconds)

    print("[2/4] telemetry storage (starting private PostgreSQL...)", flush=True)
    with start_stack() as stack:
        report.context["PostgreSQL"] = (
            f"{stack.info.postgres_version} ({stack.info.postgres_source})"
        )
        report.context["TimescaleDB"] = "yes" if stack.info.timescaledb else "not installed"
        flavours = [("plain", False)] + ([("hypertable", True)] if stack.info.timescaledb else [])
        for flavour, timescaledb in flavours:
            url = stack.create_database(f"bench_{flavour}")
            migrate(url, use_timescaledb=timescaledb)
            bench_storage.run(report, url, flavour, rows)

    pictures = args.out.parent / "bench"
    print("[3/4] simulator scale (freecar sim against a private broker)", flush=True)
    with start_stack() as stack:
        bench_sim.run(report, stack, pictures, quick=args.quick)
    print("[4/4] hub ingest (one hub process against a private broker and database)", flush=True)
    with start_stack() as stack:
        bench_hub.run(report, stack, pictures, quick=args.quick)

    # --- geofences (issue 6): in-process, no services -------------------------------------
    print("[geofences] evaluation against 100 to 10,000 fences", flush=True)
    bench_geofences.run(report, quick=args.quick)

    # --- vehicle search (issue 7): a real `freecar api` process under open-loop load -------
    print("[search] GET /v1/vehicles over 10,000 cars at 50 to 400 searches/s", flush=True)
    with start_stack() as stack:
        bench_search.run(report, stack, pictures, quick=args.quick)

    drawn = {suite for suite, _ in report.pictures}
    for suite in dict.fromkeys(r.suite for r in report.results if r.suite not in drawn):
        slug = "".join(c if c.isalnum() else "-" for c in suite).strip("-").replace("--", "-")
        bar_chart(report, suite, pictures / f"{slug}.png")
    write_markdown(report, args.out)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
