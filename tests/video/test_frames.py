"""Frames decoded in a background thread: order, errors handed over, early stop."""
from __future__ import annotations

import threading

import pytest

from sgone.video.frames import prefetch


def test_prefetch_keeps_order_and_runs_the_producer_in_another_thread():
    seen = []

    def produce():
        for i in range(20):
            seen.append(threading.current_thread().name)
            yield i

    assert list(prefetch(produce(), depth=3)) == list(range(20))
    assert set(seen) == {"sgone-frame-reader"}


def test_prefetch_reraises_the_producers_error_in_the_consumer():
    def produce():
        yield 1
        raise ValueError("frame 2 is broken")

    items = prefetch(produce())
    assert next(items) == 1
    with pytest.raises(ValueError, match="frame 2 is broken"):
        next(items)


def test_prefetch_stops_and_closes_the_producer_when_the_consumer_stops():
    closed = threading.Event()

    def produce():
        try:
            for i in range(10_000):
                yield i
        finally:
            closed.set()

    items = prefetch(produce(), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()  # the consumer gives up early (e.g. an error while writing)
    assert closed.wait(timeout=5)
    assert not any(t.name == "sgone-frame-reader" and t.is_alive() for t in threading.enumerate())


def test_prefetch_does_not_hang_the_consumer_when_the_producer_is_stuck_in_a_read():
    release = threading.Event()

    def produce():
        yield 0
        release.wait()  # a hung decoder: the next frame never comes
        yield 1

    items = prefetch(produce(), stop_wait=0.2)
    assert next(items) == 0
    closer = threading.Thread(target=items.close)  # what Ctrl-C or an error does to the consumer
    closer.start()
    closer.join(timeout=5)
    stuck = closer.is_alive()
    release.set()  # let the producer finish either way
    closer.join()
    assert not stuck
