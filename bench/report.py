"""Benchmark results: the printed table, docs/benchmarks.md and its pictures."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Result:
    """One measured case: a rate, optionally compared with a ceiling measured in the same run."""

    suite: str
    case: str
    value: float
    unit: str
    note: str = ""
    # The case this one is compared with, by name, within the same suite.
    baseline: str | None = None


@dataclass(slots=True)
class Report:
    """Everything one `make bench` run measured."""

    results: list[Result] = field(default_factory=list)
    pictures: list[tuple[str, Path]] = field(default_factory=list)
    context: dict[str, str] = field(default_factory=dict)

    def add(self, result: Result) -> None:
        """Record a result and show it at once: long runs should show progress."""
        self.results.append(result)
        print(f"  {result.suite:<20} {result.case:<48} {_fmt(result.value):>12} {result.unit}")

    def ratio(self, result: Result) -> str:
        """The result as a fraction of its baseline, or '' when it has none."""
        if result.baseline is None:
            return ""
        for other in self.results:
            if other.suite == result.suite and other.case == result.baseline and other.value:
                return f"{result.value / other.value:.2f}x {result.baseline}"
        return ""


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def machine() -> dict[str, str]:
    """Describe the machine the numbers came from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "unknown"
    return {
        "CPU": cpu,
        "Cores": str(os.cpu_count()),
        "Memory": memory,
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Commit": _git_commit(),
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def write_markdown(report: Report, path: Path) -> None:
    """Write docs/benchmarks.md: machine, context, one table per suite, pictures."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench`. Numbers are from one run on the machine below; compare the",
        "ratios within a run, not absolute numbers across machines (these machines are shared",
        "and noisy).",
        "",
        f"Run at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "| Machine | |",
        "|---|---|",
    ]
    lines += [f"| {key} | {value} |" for key, value in {**machine(), **report.context}.items()]
    suites: dict[str, list[Result]] = {}
    for result in report.results:
        suites.setdefault(result.suite, []).append(result)
    for suite, results in suites.items():
        lines += [
            "",
            f"## {suite}",
            "",
            "| case | value | unit | ratio | note |",
            "|---|---:|---|---|---|",
        ]
        lines += [
            f"| {r.case} | {_fmt(r.value)} | {r.unit} | {report.ratio(r)} | {r.note} |"
            for r in results
        ]
        for title, picture in report.pictures:
            if title == suite:
                lines += ["", f"![{suite}]({picture.relative_to(path.parent).as_posix()})"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def bar_chart(report: Report, suite: str, path: Path) -> None:
    """Draw one suite's results as horizontal bars, for people who would rather look."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in report.results if r.suite == suite]
    if not results:
        return
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(results) + 1.2))
    ax.barh([r.case for r in results], [r.value for r in results], color="#2b7bb9")
    ax.invert_yaxis()
    ax.set_xlabel(results[0].unit)
    ax.set_xlim(0, max(r.value for r in results) * 1.18)  # room for the value labels
    ax.set_title(suite)
    for index, result in enumerate(results):
        ax.text(result.value, index, f" {_fmt(result.value)}", va="center", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    report.pictures.append((suite, path))


def line_chart(  # noqa: PLR0913 - keyword-only labels of one picture
    report: Report,
    suite: str,
    path: Path,
    *,
    x_label: str,
    y_label: str,
    series: dict[str, list[tuple[float, float]]],
) -> None:
    """Draw named (x, y) series as lines, e.g. achieved against expected as load grows."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (name, points), style in zip(series.items(), ("--", "-o", "-s", "-^"), strict=False):
        ax.plot([x for x, _ in points], [y for _, y in points], style, label=name)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(suite)
    ax.grid(visible=True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    report.pictures.append((suite, path))
