"""An exclusive lock on an experiment folder, so that two runs never write one store.

:class:`FolderLock` takes an operating-system file lock (the ``filelock`` package: ``flock`` on
POSIX, ``msvcrt`` on Windows) on ``DIR/.advsmooth.lock`` and writes who holds it (pid, host, start
time, command) to the sidecar ``DIR/.advsmooth.lock.json``. The operating system releases the
lock when its process ends, however it ends (even SIGKILL), so a killed run never leaves a stale
lock behind; a stale sidecar is simply overwritten by the next holder.

A second run on a held folder fails at once with :class:`FolderLocked`, whose message names the
holder.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from .._utils import atomic_path

__all__ = ["FolderLock", "FolderLocked", "LOCK_NAME"]

LOCK_NAME = ".advsmooth.lock"


class FolderLocked(OSError):
    """The folder is held by another process; the message names the holder."""


class FolderLock:
    """Exclusive lock on ``folder`` (created if needed) for the duration of a ``with`` block.

    >>> with FolderLock("runs/exp"):  # doctest: +SKIP
    ...     ...  # only this process writes runs/exp now
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.sidecar = self.folder / (LOCK_NAME + ".json")
        self._lock: FileLock | None = None

    def holder(self) -> str:
        """Who holds the lock, as recorded in the sidecar (``"unknown process"`` if unreadable)."""
        try:
            info = json.loads(self.sidecar.read_text(encoding="utf-8"))
            return (f"pid {info['pid']} on {info['host']}, started {info['started']} "
                    f"({info['command']})")
        except (OSError, ValueError, KeyError, TypeError):
            return "unknown process"

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`FolderLocked` at once (no waiting)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise FolderLocked(f"{self.folder} is in use by another advsmooth run "
                               f"({self.holder()}); wait for it to finish or choose another "
                               "output folder") from None
        self._lock = lock
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300]}
        try:
            with atomic_path(self.sidecar) as tmp:
                tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        """Release the lock (and remove the sidecar); a no-op when not held."""
        if self._lock is None:
            return
        try:
            self.sidecar.unlink()
        except OSError:
            pass
        self._lock.release()
        self._lock = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
