"""Choosing binaries: modes, fallbacks, and clear refusals when something is missing."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devstack.binaries import (
    AmqttRuntime,
    MosquittoBinaries,
    SearchPaths,
    find_broker,
    find_dynsec_plugin,
    find_postgres,
    find_redis,
)
from devstack.errors import BinaryNotFoundError, ModeError
from devstack.modes import MODE_ENV_VAR, Mode, Source
from devstack.stack import STACK_DIR_PREFIX, start_stack

if TYPE_CHECKING:
    from collections.abc import Callable

# A machine with nothing installed: empty PATH, no Debian PostgreSQL, no sbin, no libraries.
BARE = SearchPaths(path="", postgres_roots=(), sbin_dirs=(), library_dirs=())


def _fake_postgres(root: Path, major: str, version: str) -> Path:
    """A Debian-style `root/<major>/bin` whose postgres only answers --version."""
    bindir = root / major / "bin"
    bindir.mkdir(parents=True)
    for tool in ("initdb", "postgres"):
        script = bindir / tool
        script.write_text(f"#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bindir


def test_mode_from_argument_env_and_default() -> None:
    assert Mode.resolve("SYSTEM") is Mode.SYSTEM
    assert Mode.resolve(None, {MODE_ENV_VAR: "embedded"}) is Mode.EMBEDDED
    assert Mode.resolve(None, {}) is Mode.AUTO
    assert Mode.resolve(None, {MODE_ENV_VAR: ""}) is Mode.AUTO


def test_unknown_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(ModeError, match="auto, system, embedded"):
        Mode.resolve(None, {MODE_ENV_VAR: "docker"})


@pytest.mark.parametrize("find", [find_postgres, find_redis, find_broker])
def test_system_mode_refuses_when_binaries_are_missing(
    find: Callable[[Mode, SearchPaths], object],
) -> None:
    with pytest.raises(BinaryNotFoundError, match=r"for mode system: .*not on PATH.*Fix: install"):
        find(Mode.SYSTEM, BARE)


def test_system_mode_start_fails_before_creating_anything() -> None:
    before = set(Path(tempfile.gettempdir()).glob(f"{STACK_DIR_PREFIX}*"))
    with pytest.raises(BinaryNotFoundError, match="PostgreSQL"):
        start_stack("system", search=BARE)
    assert set(Path(tempfile.gettempdir()).glob(f"{STACK_DIR_PREFIX}*")) == before


def test_auto_mode_falls_back_to_the_embedded_binaries() -> None:
    postgres = find_postgres(Mode.AUTO, BARE)
    redis = find_redis(Mode.AUTO, BARE)
    broker = find_broker(Mode.AUTO, BARE)
    assert postgres.source is redis.source is broker.source is Source.EMBEDDED
    assert isinstance(broker, AmqttRuntime)
    assert (postgres.bindir / "postgres").is_file()
    assert os.access(redis.path, os.X_OK)


def test_embedded_mode_ignores_system_binaries() -> None:
    assert find_postgres(Mode.EMBEDDED).source is Source.EMBEDDED
    assert find_redis(Mode.EMBEDDED).source is Source.EMBEDDED
    assert isinstance(find_broker(Mode.EMBEDDED), AmqttRuntime)


def test_nothing_at_all_explains_both_fixes() -> None:
    bare = SearchPaths(path="", postgres_roots=(), sbin_dirs=(), library_dirs=(), embedded=False)
    with pytest.raises(
        BinaryNotFoundError, match=r"apt-get install redis-server.*freecar\[embedded\]"
    ):
        find_redis(Mode.AUTO, bare)


def test_debian_layout_prefers_the_highest_major(tmp_path: Path) -> None:
    _fake_postgres(tmp_path, "14", "14.11")
    newest = _fake_postgres(tmp_path, "16", "16.3")
    search = SearchPaths(path="", postgres_roots=(tmp_path,))
    found = find_postgres(Mode.SYSTEM, search)
    assert (found.bindir, found.version, found.major) == (newest, "16.3", 16)


def test_postgres_older_than_14_is_not_used(tmp_path: Path) -> None:
    _fake_postgres(tmp_path, "13", "13.9")
    search = SearchPaths(path="", postgres_roots=(tmp_path,))
    with pytest.raises(BinaryNotFoundError, match="older than 14"):
        find_postgres(Mode.SYSTEM, search)
    assert find_postgres(Mode.AUTO, search).source is Source.EMBEDDED


def test_postgres_on_path_wins_and_resolves_symlinks(tmp_path: Path) -> None:
    real = _fake_postgres(tmp_path / "opt", "17", "17.2")
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "postgres").symlink_to(real / "postgres")
    search = SearchPaths(path=str(shims), postgres_roots=())
    assert find_postgres(Mode.SYSTEM, search).bindir == real


def test_dynsec_plugin_is_searched_in_library_dirs(tmp_path: Path) -> None:
    mosquitto = tmp_path / "prefix" / "sbin" / "mosquitto"
    plugin_dir = tmp_path / "elsewhere"
    plugin_dir.mkdir()
    (plugin_dir / "mosquitto_dynamic_security.so").touch()
    found, _ = find_dynsec_plugin(mosquitto, SearchPaths(library_dirs=(plugin_dir,)))
    assert found == plugin_dir / "mosquitto_dynamic_security.so"
    missing, searched = find_dynsec_plugin(mosquitto, SearchPaths(library_dirs=()))
    assert missing is None
    assert tmp_path / "prefix" / "lib" in searched


def _fake_mosquitto(prefix: Path, version: str) -> Path:
    """A mosquitto whose -h prints `version`, like the real one, and nothing else."""
    sbin = prefix / "sbin"
    sbin.mkdir(parents=True)
    script = sbin / "mosquitto"
    script.write_text(f"#!/bin/sh\necho 'mosquitto version {version}'\nexit 3\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return sbin


def test_mosquitto_without_dynsec_plugin_falls_back_to_amqtt(tmp_path: Path) -> None:
    sbin = _fake_mosquitto(tmp_path, "2.0.18")
    search = SearchPaths(path="", sbin_dirs=(sbin,), library_dirs=())
    with pytest.raises(BinaryNotFoundError, match=r"2\.0\.18 found but not mosquitto_dynamic"):
        find_broker(Mode.SYSTEM, search)
    assert isinstance(find_broker(Mode.AUTO, search), AmqttRuntime)

    plugin_dir = tmp_path / "lib"
    plugin_dir.mkdir()
    (plugin_dir / "mosquitto_dynamic_security.so").touch()
    found = find_broker(Mode.SYSTEM, search)
    assert isinstance(found, MosquittoBinaries)
    assert (found.version, found.dynsec_plugin.parent) == ("2.0.18", plugin_dir)


def test_mosquitto_1_is_not_used(tmp_path: Path) -> None:
    sbin = _fake_mosquitto(tmp_path, "1.6.12")
    search = SearchPaths(path="", sbin_dirs=(sbin,), library_dirs=())
    with pytest.raises(BinaryNotFoundError, match=r"needs 2\.x"):
        find_broker(Mode.SYSTEM, search)
