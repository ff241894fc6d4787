"""Calls in flight on a native handle, so that closing it waits for them (dgemma.h, "Threads").

Every use of a model or session handle runs inside `gate.use()`; `close` refuses new calls, waits
for those in flight (a generation cancels itself at its next step when it sees `closing`), then
frees. A thread already inside a call may nest further calls (a callback that opens a session)
even while the handle is closing, and may not close it: that would wait for itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import InvalidArgumentError


class Gate:
    def __init__(self, ptr, what: str):
        self._cv = threading.Condition()
        self._ptr = ptr
        self._what = what
        self._closing = False
        self._calls: dict[int, int] = {}  # thread id -> calls in flight on that thread

    @property
    def closing(self) -> bool:
        """True once close() has begun: work in progress should stop at its next step."""
        return self._closing or self._ptr is None

    @contextmanager
    def use(self) -> Iterator:
        tid = threading.get_ident()
        with self._cv:
            if self._ptr is None or (self._closing and not self._calls.get(tid)):
                raise InvalidArgumentError(f"the {self._what} is closed")
            self._calls[tid] = self._calls.get(tid, 0) + 1
            ptr = self._ptr
        try:
            yield ptr
        finally:
            with self._cv:
                self._calls[tid] -= 1
                if not self._calls[tid]:
                    del self._calls[tid]
                self._cv.notify_all()

    def close(self, free: Callable) -> None:
        """Refuses new calls, waits for those in flight, then calls free(ptr) once."""
        with self._cv:
            if self._ptr is None:
                return
            if self._calls.get(threading.get_ident()):
                raise InvalidArgumentError(f"the {self._what} cannot be closed from inside one of its own calls "
                                           f"(a callback); close it after that call returns")
            self._closing = True
            self._cv.wait_for(lambda: not self._calls)
            ptr, self._ptr = self._ptr, None
            if ptr is None:  # another thread closed it meanwhile
                return
            free(ptr)
