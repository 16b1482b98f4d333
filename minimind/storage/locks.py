"""Exclusive ownership of a path by one live process: an flock on a lock file beside it.

The kernel releases an flock when its process dies (kill -9, a crash, a reboot), so a lock is never
left behind; a process that is merely stopped (Ctrl-Z, SIGSTOP, a suspended laptop) keeps it, so its
run is never mistaken for a dead one. The owner writes its pid and host into the file, so whoever is
refused can be told who holds it. Other processes may probe a lock (acquire and release at once);
an owner-to-be therefore retries for a moment before giving up.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
import weakref
from pathlib import Path
from typing import Optional

ACQUIRE_S = 2.0  # how long to retry while another process probes the lock
_HELD: "weakref.WeakSet[OwnerLock]" = weakref.WeakSet()


def _drop_inherited_locks() -> None:
    """In a forked child (a DataLoader worker): close its copies of the parent's lock descriptors. An
    flock belongs to the open file, so a child holding a copy kept a killed parent's run "live" until
    the child noticed and exited; closing (never unlocking: that would free the parent's lock) ends that."""
    for lock in list(_HELD):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


class OwnerLock:
    remove_on_release = False  # a run's owner.lock stays; a lock beside a user's files goes with its owner

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: Optional[int] = None

    @property
    def owned(self) -> bool:
        return self._fd is not None

    def acquire(self, wait_s: float = ACQUIRE_S) -> bool:
        """Take the lock (True), or find it held by a live process (False)."""
        if self._fd is not None:
            return True
        deadline = time.monotonic() + wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        return False
                    time.sleep(0.05)
            if self._still_at_path(fd):
                break
            os.close(fd)  # its owner removed it on release while we waited: lock the file there now
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        _HELD.add(self)
        return True

    def _still_at_path(self, fd: int) -> bool:
        try:
            here, there = os.fstat(fd), os.stat(self.path)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            if self.remove_on_release:  # while still locked: a waiter then finds its file gone and retries
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            _HELD.discard(self)

    def __del__(self) -> None:  # an owner dropped without release() (a Trainer built but never run)
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock

    def held_elsewhere(self) -> bool:
        """Does a live process (not this one) hold the lock? Probes without keeping it."""
        if self._fd is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:  # no lock file (never claimed), or unreadable: nobody we can see holds it
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def owner(self) -> str:
        """"pid N on HOST" as the owner recorded it (or "another process")."""
        try:
            pid, host = self.path.read_text().split()
            return f"pid {int(pid)} on {host}"
        except (OSError, ValueError):
            return "another process"
