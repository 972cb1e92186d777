"""Identical reads that arrive together share one query, never an older one.

`GET /api/v1/stats` is open (like predicting) and groups every row of the table: 0.26 s alone with 200,000
rows, and 40 clients asking at once kept the store's query threads full (3.7 s each, a label given meanwhile
waited up to 5.9 s behind them; a probe, session 49). A call that arrives while the same read runs waits for it
to end and then shares the next run with every other call that arrived meanwhile: at most one run per key at a
time, and each caller gets a result read after it asked (a label given before the call is in it).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Hashable
from typing import Any


class Coalesced:
    """`run(key, fn)`: `fn()`'s result (a deep copy per caller) or its exception, shared with the calls of the
    same key that arrived before its run began."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._arrived: dict[Hashable, int] = {}  # key -> how many calls arrived so far
        self._running: set[Hashable] = set()
        self._done: dict[Hashable, tuple[int, Any, BaseException | None]] = {}  # key -> (covers calls 1..n, result)
        self._inside: dict[Hashable, int] = {}  # key -> calls in `run` now

    def run(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        with self._cond:
            self._inside[key] = self._inside.get(key, 0) + 1
        try:
            result, error = self._shared(key, fn)
        finally:
            with self._cond:  # nothing kept for a key nobody asks for now (`?model=` is any text a client sends)
                self._inside[key] -= 1
                if not self._inside[key]:
                    for table in (self._inside, self._arrived, self._done):
                        table.pop(key, None)
        return _hand_out(result, error)

    def _shared(self, key: Hashable, fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
        with self._cond:
            ticket = self._arrived[key] = self._arrived.get(key, 0) + 1
            while True:
                covers, result, error = self._done.get(key, (0, None, None))
                if covers >= ticket:  # a run that began after this call arrived has ended
                    return result, error
                if key not in self._running:
                    break  # this call runs it, for every call arrived until now
                self._cond.wait()
            self._running.add(key)
            covers = self._arrived[key]
        result, error = None, None
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to every caller it covers
            error = exc
        with self._cond:
            self._running.discard(key)
            self._done[key] = (covers, result, error)
            self._cond.notify_all()
        return result, error


def _hand_out(result: Any, error: BaseException | None) -> Any:
    if error is not None:
        raise error
    return copy.deepcopy(result)
