"""Root runs PostgreSQL as another account, which must be able to reach the binaries."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from devstack.accounts import Account, postgres_account, running_as_root
from devstack.binaries import PostgresBinaries
from devstack.errors import DevStackError
from devstack.modes import Source
from devstack.postgres import reachable_binaries

# An account that owns nothing here and belongs to no group that does.
STRANGER = Account(name="stranger", uid=os.getuid() + 4242, gid=os.getgid() + 4242)


def _wheel_layout(site: Path) -> PostgresBinaries:
    """pgserver's layout: pgserver/pginstall/{bin,lib,share} and pgserver.libs beside it."""
    bindir = site / "pgserver" / "pginstall" / "bin"
    bindir.mkdir(parents=True)
    (site / "pgserver" / "pginstall" / "share").mkdir()
    (bindir / "postgres").write_text("#!/bin/sh\n")
    (bindir / "postgres").chmod(0o755)
    (site / "pgserver.libs").mkdir()
    (site / "pgserver.libs" / "libpq-0.so.5").write_text("")
    return PostgresBinaries(bindir=bindir, version="16.2", source=Source.EMBEDDED)


def test_can_reach_follows_every_directory_on_the_way() -> None:
    # Not tmp_path: pytest makes its base directory 0700, which nobody else may enter.
    with tempfile.TemporaryDirectory() as base:
        top = Path(base)
        open_dir = top / "open"
        open_dir.mkdir(mode=0o755)
        top.chmod(0o755)
        assert STRANGER.can_reach(open_dir)
        top.chmod(0o700)
        assert not STRANGER.can_reach(open_dir)
        assert Account(name="me", uid=os.getuid(), gid=os.getgid()).can_reach(open_dir)


def test_unreachable_embedded_binaries_are_copied_with_their_libraries(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    binaries = _wheel_layout(private / "site-packages")
    scratch = tmp_path / "stack"
    scratch.mkdir()
    copied = reachable_binaries(binaries, STRANGER, scratch)
    assert copied.bindir.is_relative_to(scratch)
    assert (copied.tool("postgres")).is_file()
    # The vendored libpq must sit where the binaries' RPATH ($ORIGIN/../../../) expects.
    assert (copied.bindir / ".." / ".." / ".." / "pgserver.libs" / "libpq-0.so.5").is_file()
    assert reachable_binaries(binaries, None, scratch) is binaries


def test_unreachable_system_binaries_are_refused(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    binaries = _wheel_layout(private)
    system = PostgresBinaries(bindir=binaries.bindir, version="16.2", source=Source.SYSTEM)
    with pytest.raises(DevStackError, match="cannot reach"):
        reachable_binaries(system, STRANGER, tmp_path)


def test_postgres_account_only_when_root() -> None:
    account = postgres_account()
    if not running_as_root():
        assert account is None
        return
    assert account is not None
    assert account.uid != 0
    assert account.name in {"postgres", "nobody"}
