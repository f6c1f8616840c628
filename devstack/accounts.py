"""The unprivileged account PostgreSQL runs as when the stack's owner is root.

initdb and postgres refuse to run as root, and CI runs as root. Rather than reshuffle the
whole stack, only PostgreSQL changes user: its directory is handed to that account and the
process is started with `subprocess.Popen(user=..., group=...)`, which drops privileges in
the child right before exec (what `setpriv` or `runuser` would do, without a wrapper
process between us and the server's pid). Every other service runs as the owner.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devstack.errors import DevStackError

if TYPE_CHECKING:
    from pathlib import Path

# Debian's PostgreSQL packages create `postgres`; `nobody` exists on every Linux system.
POSTGRES_ACCOUNT_CANDIDATES = ("postgres", "nobody")


@dataclass(frozen=True, slots=True)
class Account:
    """A system user a service runs as."""

    name: str
    uid: int
    gid: int

    def owns(self, path: Path) -> None:
        """Hand `path` (not recursively) to this account."""
        os.chown(path, self.uid, self.gid)

    def can_reach(self, path: Path, *, execute: bool = False) -> bool:
        """Whether this account may walk down to `path` and read it (and run it, if asked).

        Supplementary groups are ignored, so the answer errs towards "no".
        """
        target = path.resolve()
        for directory in [*reversed(target.parents), target]:
            info = directory.stat()
            if directory != target:
                needed = stat.S_IXOTH
            elif stat.S_ISDIR(info.st_mode) or execute:
                needed = stat.S_IROTH | stat.S_IXOTH
            else:
                needed = stat.S_IROTH
            if info.st_uid == self.uid:
                needed <<= 6
            elif info.st_gid == self.gid:
                needed <<= 3
            if info.st_mode & needed != needed:
                return False
        return True


def running_as_root() -> bool:
    """Whether this process has root's effective uid."""
    return os.geteuid() == 0


def postgres_account() -> Account | None:
    """The account PostgreSQL must run as, or None to run it as ourselves (not root)."""
    if not running_as_root():
        return None
    for name in POSTGRES_ACCOUNT_CANDIDATES:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return Account(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)
    tried = ", ".join(POSTGRES_ACCOUNT_CANDIDATES)
    raise DevStackError(
        "PostgreSQL refuses to run as root and none of the accounts it could use instead "
        f"exists ({tried}); create one, e.g. `useradd --system postgres`, or run as a normal user"
    )
