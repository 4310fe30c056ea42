"""One worker process per job database: an advisory lock the kernel drops when we die."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from batchmap.errors import LockedError

# `owner` probes the lock with a shared flock for a moment; a run starting in that instant
# tries again a few times rather than being refused by a mere `status`.
_TRIES = 5
_RETRY_AFTER = 0.02  # seconds


class JobLock:
    """Exclusive `flock` on `<db>.lock`; holds the owner's pid so a refusal can name it."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < _TRIES - 1:
                    time.sleep(_RETRY_AFTER)
        else:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{self.path.with_suffix('')}: another batchmap (pid {owner}) is working on "
                "this job database; wait for it or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def owner(db_path: Path) -> int | None:
        """The pid of the live run holding the lock of `db_path`, or None when no run holds it.

        Never takes the lock from its holder and never creates the lock file: a shared lock is
        tried and dropped at once. None also when a holder has not written its pid yet.
        """
        path = db_path.with_name(db_path.name + ".lock")
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                return int(text) if text.isdigit() else None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
