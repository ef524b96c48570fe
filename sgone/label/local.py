"""`--engine local`: one process; reader threads decode ahead, the model runs batches on the
main thread, writer threads encode and store the results, all through bounded queues (memory
stays at a few batches whatever the collection's size)."""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

from sgone.errors import SgoneError
from sgone.label.inputs import Item
from sgone.label.output import LabelOutput
from sgone.label.work import LabelSpec, Encoded, decode, encode_result, failed


def _timed_decode(path: str, spec: LabelSpec):
    start = time.perf_counter()
    try:
        return decode(path, spec), time.perf_counter() - start
    except SgoneError as exc:
        return exc, time.perf_counter() - start


def run_local(predictor, todo: Sequence[Item], output: LabelOutput, spec: LabelSpec, batch_size: int = 4,
              stop_on_bad: bool = False, on_result: Callable[[Encoded], None] | None = None,
              readers: int = 2, writers: int = 1) -> None:
    """Label `todo` with `predictor` (support already set), committing each image to `output`.

    `on_result` is called on the main thread for every stored image (progress). With
    `stop_on_bad` the first unreadable image is recorded, then raised as SgoneError. On an
    exception or Ctrl-C, images already predicted are still stored; the rest are left for a rerun.
    """
    window = max(2 * batch_size, readers * 2)  # decoded images waiting for the model
    reading = ThreadPoolExecutor(readers, thread_name_prefix="label-read")
    writing = ThreadPoolExecutor(writers, thread_name_prefix="label-write")
    decoding: deque[tuple[Item, Future]] = deque()
    storing: deque[Future] = deque()
    queue = iter(todo)

    def commit(encoded: Encoded) -> Encoded:
        output.commit(encoded)  # on the writer thread only: the journal has one writer
        return encoded

    def store(item: Item, image, full_hw, prediction, seconds: float) -> Encoded:
        return commit(encode_result(item.key, item.path, image, full_hw, prediction, spec, predictor.shots, seconds))

    def drain(limit: int) -> None:
        while len(storing) > limit:
            encoded = storing.popleft().result()  # re-raises a write error here
            if on_result:
                on_result(encoded)

    try:
        while True:
            while len(decoding) < window and (item := next(queue, None)) is not None:
                decoding.append((item, reading.submit(_timed_decode, item.path, spec)))
            if not decoding:
                break
            batch = [decoding.popleft() for _ in range(min(batch_size, len(decoding)))]
            good, stop = [], None
            for item, future in batch:
                result, seconds = future.result()
                if isinstance(result, SgoneError):
                    storing.append(writing.submit(commit, failed(item.key, item.path, result, seconds)))
                    if stop_on_bad:  # the images before it are still labelled
                        stop = SgoneError(f"{result} (stopped: --on-bad-input stop)")
                        break
                else:
                    good.append((item, result, seconds))
            if good:
                start = time.perf_counter()
                predictions = predictor.predict_batch([image for _, (image, _), _ in good])
                share = (time.perf_counter() - start) / len(good)
                for (item, (image, full_hw), seconds), prediction in zip(good, predictions):
                    storing.append(writing.submit(store, item, image, full_hw, prediction, seconds + share))
            drain(0 if stop else 2 * writers)  # the model never runs far ahead of the writers
            if stop:
                raise stop
        drain(0)
    finally:
        for _, future in decoding:
            future.cancel()
        reading.shutdown(wait=True, cancel_futures=True)
        writing.shutdown(wait=True)  # what was predicted is stored, even on Ctrl-C
        try:
            drain(0)
        except Exception:
            pass  # the first error is already on its way up
