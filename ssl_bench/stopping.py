"""Stopping a run cleanly. SIGINT and SIGTERM raise KeyboardInterrupt and are remembered, so that code which turns
any error of a plugin or of torch into one of its own (a failed job, a plugin that failed to load) can tell a stop
from a fault, and let the stop through: torch.save, for one, turns a KeyboardInterrupt into a RuntimeError."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_requested = threading.Event()


def request_stop(signum: int, frame: object) -> None:
    """The handler of SIGINT and SIGTERM: the run stops, and resumes when started again."""
    _requested.set()
    raise KeyboardInterrupt


def stop_requested() -> bool:
    """Whether a stop signal arrived since :func:`stops_on_signals` began."""
    return _requested.is_set()


@contextlib.contextmanager
def stops_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM stop the work inside, remembered for :func:`stop_requested`; the handlers before are
    restored after. Only the main thread can handle signals: elsewhere the embedding program keeps its own."""
    _requested.clear()
    main = threading.current_thread() is threading.main_thread()
    numbers = (signal.SIGINT, signal.SIGTERM) if main else ()
    previous = {number: signal.signal(number, request_stop) for number in numbers}
    try:
        yield
    finally:
        _requested.clear()  # the stop, if any, is on its way out as a KeyboardInterrupt
        for number, handler in previous.items():
            signal.signal(number, handler)
