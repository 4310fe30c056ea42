"""One worker process per job database: an advisory lock the kernel drops when we die."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from batchmap.errors import LockedError


class JobLock:
    """Exclusive `flock` on `<db>.lock`; holds the owner's pid so a refusal can name it."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
