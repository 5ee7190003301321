"""Output folders a run can own: checks that a folder can be written, and an advisory lock.

`lock_folder(folder)` holds an OS advisory lock (flock) on FOLDER/.looptheory.lock for as long
as its `with` block runs, so two runs never share a folder. The operating system releases the
lock when the process ends in any way (SIGKILL included), so a killed run leaves no stale lock:
the next run simply takes it. The lock file itself stays; it is empty but for the last holder's
process id, harmless, and ignored when a folder is judged empty. Processes forked by the holder
share its lock until they exit (as workers of one run should).

This module imports nothing from the package, so a later `--resume` or `--jobs` (and the tests)
can use it on its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets

try:
    import fcntl
except ImportError:  # Windows: msvcrt's byte-range lock, also released when the process ends
    fcntl = None
    import msvcrt

LOCK_NAME = ".looptheory.lock"


class FolderBusy(ValueError):
    """Another process holds the folder's lock."""


def probe_writable(folder: str) -> None:
    """Create and remove a uniquely named empty file in `folder`; OSError (PermissionError for
    a read-only folder) if that fails. A real write, because os.access says yes to root even on
    a read-only mount or folder."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "no write permission", folder)
    probe = os.path.join(folder, f".looptheory-probe-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    os.remove(probe)


def _try_lock(fd) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True
    try:  # pragma: no cover - Windows only
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def lock_folder(folder: str, name: str = "folder"):
    """Hold the advisory lock of `folder` for the `with` block; yields the lock file's path.

    FolderBusy (a ValueError naming `name` and the folder, with the holder's process id when
    known) if another process holds it; ValueError naming `name` if the lock file cannot be
    created. The lock is released at the end of the block, or by the OS when the process dies.
    """
    path = os.path.join(folder, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise ValueError(f"{name}: cannot create the lock file {path!r} ({exc.strerror or exc})") from None
    try:
        if not _try_lock(fd):
            try:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
            except OSError:  # Windows refuses to read a region another process locked
                holder = ""
            who = f" (process {holder})" if holder.isdigit() else ""
            raise FolderBusy(f"{name}: folder {folder!r} is in use by another looptheory run{who}; "
                             f"wait for it to finish or choose another folder")
        # the holder's process id, only for the message above; the lock is the flock, not this
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # closing the last descriptor releases the lock
