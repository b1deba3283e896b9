"""Running Postgres when we are root: it refuses to, so (like pgserver) it runs as an OS user.

The user (``pgserver``, created with ``useradd`` if missing) owns the data directory; the data
directory's ancestors get the *search* bit for others (o+x, not read) so that user can reach it,
and the bundled binaries are made readable and runnable by it.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

from autellix.local.embedded_server import EmbeddedServerError

__all__ = [
    "PG_OS_USER",
    "ensure_install_readable",
    "ensure_os_user",
    "ensure_traversable",
    "is_root",
]

log = logging.getLogger(__name__)

PG_OS_USER = "pgserver"  # same name pgserver itself uses, so both can share one machine


def is_root() -> bool:
    """Whether we run as root (Postgres then needs a user of its own)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def ensure_os_user(name: str) -> tuple[int, int]:
    """uid/gid of ``name``, creating a system user without home or login shell if missing."""
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if shutil.which("useradd"):
            cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
        elif shutil.which("adduser"):  # busybox/alpine
            cmd = ["adduser", "-S", "-D", "-H", name]
        else:
            raise EmbeddedServerError(
                f"running as root: need an OS user {name!r} to run Postgres, and neither "
                "useradd nor adduser exists; create the user or pass --database-url"
            ) from None
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode not in (0, 9):  # 9: created concurrently
            raise EmbeddedServerError(f"{' '.join(cmd)} failed: {result.stderr.strip()}") from None
        log.info("created OS user %s to run the embedded Postgres", name)
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _add_mode(path: Path, bits: int) -> None:
    """Add permission ``bits`` to ``path`` (logged: we change files that are not ours)."""
    mode = path.stat().st_mode
    if mode & bits != bits:
        log.info("chmod %s: adding %o so the Postgres user can reach it", path, bits)
        path.chmod(stat.S_IMODE(mode) | bits)


def ensure_traversable(path: Path) -> None:
    """Give 'others' the search bit (only) on every ancestor of ``path``."""
    for parent in path.resolve().parents:
        _add_mode(parent, stat.S_IXOTH)


def ensure_install_readable(bin_dir: Path) -> None:
    """The Postgres user must run ``bin`` and read ``lib``/``share``; pip normally allows it."""
    root = bin_dir.parent
    ensure_traversable(root)
    if (bin_dir / "postgres").stat().st_mode & stat.S_IXOTH and root.stat().st_mode & stat.S_IXOTH:
        return
    for dirpath, _dirs, files in os.walk(root):
        _add_mode(Path(dirpath), stat.S_IROTH | stat.S_IXOTH)
        for f in files:
            p = Path(dirpath) / f
            bits = stat.S_IROTH | (stat.S_IXOTH if p.stat().st_mode & stat.S_IXUSR else 0)
            _add_mode(p, bits)
