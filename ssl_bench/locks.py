"""Lock files that let any number of workers, on one machine or many sharing the results folder, claim work.

A worker claims a job or a pretraining by creating ``<folder>/lock`` with ``O_CREAT | O_EXCL`` (atomic on local
and NFSv3+ file systems) and writing its host, pid and a heartbeat time into it; a thread refreshes the heartbeat
while the work runs. A lock whose holder is gone (a dead pid on this host, or no heartbeat for ``stale_after``
seconds) is taken over, under a short second lock so that two workers never take over the same one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ssl_bench.results import write_json

HEARTBEAT_SECONDS = 10.0
#: A lock with no heartbeat for this long is taken to be abandoned (its holder lost power or the network).
STALE_SECONDS = 120.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lock and since when (Unix times)."""

    host: str
    pid: int
    since: float
    heartbeat: float

    @classmethod
    def me(cls) -> Holder:
        now = time.time()
        return cls(socket.gethostname(), os.getpid(), now, now)

    def is_alive(self, stale_after: float) -> bool:
        if time.time() - self.heartbeat > stale_after:
            return False
        if self.host != socket.gethostname():
            return True  # another machine's pid cannot be checked: the heartbeat decides
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's live process
            return True
        return True

    def describe(self) -> str:
        return f"{self.host} pid {self.pid} since {time.strftime('%H:%M:%S', time.localtime(self.since))}"


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in lock file ``path``; None if there is none (or it is being written right now)."""
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


class Lock:
    """``<folder>/lock``: :meth:`acquire` claims it or says who holds it; :meth:`release` gives it back."""

    def __init__(self, folder: Path, stale_after: float = STALE_SECONDS) -> None:
        self.path = Path(folder) / "lock"
        self.stale_after = stale_after
        self.taken_over: Holder | None = None
        self._holder: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Claim the lock; False if a live holder has it. A stale lock is taken over (``taken_over`` says whose)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._create():
            holder = read_holder(self.path)
            if holder is not None and holder.is_alive(self.stale_after):
                return False
            if not self._take_over(holder):
                return False
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path}", daemon=True)
        self._thread.start()
        return True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._holder is not None and read_holder(self.path) == self._holder:
            self.path.unlink(missing_ok=True)
        self._holder = None

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        self._holder = Holder.me()
        with os.fdopen(descriptor, "w") as stream:
            json.dump(asdict(self._holder), stream)
        return True

    def _take_over(self, stale: Holder | None) -> bool:
        """Replace a stale lock with ours, under ``lock.takeover`` so that only one worker does it."""
        guard = self.path.with_name("lock.takeover")
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            if time.time() - _mtime(guard) > self.stale_after:
                guard.unlink(missing_ok=True)  # a worker died inside its takeover; the next try goes ahead
            return False
        try:
            if read_holder(self.path) != stale:
                return False  # someone else took it over, or its holder came back
            self.path.unlink(missing_ok=True)
            if not self._create():
                return False
            self.taken_over = stale
            return True
        finally:
            guard.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self._holder = Holder(self._holder.host, self._holder.pid, self._holder.since, time.time())
            write_json(self.path, asdict(self._holder))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
