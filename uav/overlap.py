"""Host work on worker threads, so the accelerator never waits for it (issue 21, item 4).

Three kinds of host work sit between the GPU's stages: decoding the input, estimating
optical flow (OpenCV or RAFT, needed only at the late propagation steps) and encoding the
output. Each runs on its own thread here, with a bounded queue, so that:

* order is kept: items come out in the order they went in;
* an exception on a worker stops the run with the worker's own exception (type and
  message), raised in the calling thread at its next hand-over;
* memory stays bounded: a producer blocks once ``maxsize`` items wait, and a consumer
  holds at most ``maxsize`` items besides the one it is working on.

:class:`Background` runs a producer (an iterator) ahead of its consumer;
:class:`Consumer` runs a consumer (a function called on every item) behind its producer;
:class:`Deferred` is one value computed on a thread and waited for when first needed.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

__all__ = ["Background", "Consumer", "Deferred"]

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Background(Generic[T]):
    """Iterate ``source`` on a worker thread, at most ``maxsize`` items ahead of the consumer.

    Use as an iterator (in a ``with`` block, or call :meth:`close`, to stop the worker when
    the consumer stops early). An exception raised by ``source`` is re-raised by ``next()``.
    """

    def __init__(self, source: Iterable[T], maxsize: int = 2, name: str = "uav-background") -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._source = source
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            self._put(_Failure(exc))
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        item = self._queue.get()
        if item is _DONE:
            self._stop.set()
            raise StopIteration
        if isinstance(item, _Failure):
            self._stop.set()
            raise item.exc
        return item

    def close(self) -> None:
        """Stop the worker (it finishes the item it is producing) and wait for it."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Background[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Consumer(Generic[T]):
    """Call ``fn(item)`` on a worker thread for every :meth:`submit` ted item, in order.

    :meth:`submit` blocks while ``maxsize`` items wait; an exception raised by ``fn`` is
    re-raised by the next :meth:`submit` or by :meth:`close` (which also waits for the
    queue to drain). After a failure the remaining items are dropped.
    """

    def __init__(self, fn: Callable[[T], Any], maxsize: int = 2, name: str = "uav-consumer") -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self._fn = fn
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is None:
                try:
                    self._fn(item)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the submitting thread
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, item: T) -> None:
        self._raise()
        while True:
            try:
                self._queue.put(item, timeout=0.05)
                break
            except queue.Full:
                self._raise()
        self._raise()

    def close(self) -> None:
        """Wait for every submitted item; re-raise the worker's exception, if any."""
        self._queue.put(_DONE)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Stop after the current item, dropping the rest (used when the run already failed)."""
        self._error = self._error or RuntimeError("aborted")
        self._queue.put(_DONE)
        self._thread.join()


class Deferred(Generic[T]):
    """``fn()`` computed on a worker thread; :meth:`result` waits for it (re-raising its exception)."""

    def __init__(self, fn: Callable[[], T], name: str = "uav-deferred") -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def failed(self) -> bool:
        """Whether it finished with an exception (without waiting)."""
        return self.done() and self._error is not None

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
