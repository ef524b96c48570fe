"""`--engine ray`: Ray Data distributes the inputs; an actor pool (`map_batches` with
`ActorPoolStrategy`) holds one predictor per worker, its support encoded once; workers decode,
predict and encode (PNG bytes, COCO RLE) and the driver stores each result once.

Fault tolerance is Ray's: a worker that dies is restarted and its batch re-run by Ray Data; the
driver stores every key once (`LabelOutput.commit`), so a re-run batch writes nothing twice.
Workers never touch the output folder, so the cluster's machines need the input files (shared
storage, same paths) but not the output folder.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from sgone.errors import SgoneError
from sgone.label.inputs import Item
from sgone.label.output import LabelOutput
from sgone.label.work import Encoded, LabelSpec, label_batch

INSTALL = "pip install 'sgone[ray]'"


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (ray without its data extra has no ray.data)
    except ImportError as exc:
        raise SgoneError(f"--engine ray: needs Ray Data ({INSTALL}); {exc}") from None
    return ray


class LabelWorker:
    """One Ray actor: builds the predictor and encodes the support once, then labels batches."""

    def __init__(self, spec: LabelSpec) -> None:
        from sgone.label.work import build_predictor

        self.spec = spec
        self.predictor = build_predictor(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = list(zip(batch["key"].tolist(), batch["path"].tolist()))
        results = label_batch(self.predictor, rows, self.spec)
        return to_columns(results, len(self.spec.classes))


def to_columns(results: Sequence[Encoded], classes: int) -> dict[str, np.ndarray]:
    """Encoded results -> a columnar batch: record (JSON text), mask_<c> and overlay (PNG bytes)."""
    import json

    columns = {"record": np.array([json.dumps(r.record) for r in results], dtype=object),
               "overlay": np.array([r.overlay for r in results], dtype=object)}
    for c in range(classes):
        columns[f"mask_{c}"] = np.array([r.masks[c] if r.masks else b"" for r in results], dtype=object)
    return columns


def from_columns(batch: dict[str, np.ndarray], classes: int) -> list[Encoded]:
    import json

    out = []
    for i, text in enumerate(batch["record"]):
        record = json.loads(text)
        masks = [bytes(batch[f"mask_{c}"][i]) for c in range(classes)] if record["status"] == "done" else []
        out.append(Encoded(record, masks, bytes(batch["overlay"][i])))
    return out


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """One TCP connection to a HOST:PORT (or ray://HOST:PORT) address, so that a wrong address is
    one line within seconds (ray.init retries an unreachable cluster for minutes)."""
    import socket

    target = address.split("://", 1)[-1]
    if target == "auto":
        return  # ray finds (or fails to find) the local cluster's address itself
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise SgoneError(f"--address {address}: expected HOST:PORT (the head node's GCS port, e.g. 10.0.0.1:6379), "
                         f"ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise SgoneError(f"--address {address}: cannot join the Ray cluster ({exc.strerror or exc})") from None


@contextmanager
def environment(**values: str):
    """Environment variables set for the block (the processes it starts inherit them), then restored."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def connect(address: str | None, workers: int):
    """Join the cluster at `address` or start a local one; -> (ray, started_here)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    if address:
        check_reachable(address)
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # Ray starts workers at nice 15: on a machine with anything else running they starve (importing
            # torch took 31 s instead of 4 s beside one busy process); a cluster started for this job runs it
            # at normal priority unless the user set RAY_worker_niceness
            # "local": a new cluster for this run even where another one is running (join it with --address auto)
            with environment(RAY_worker_niceness=os.environ.get("RAY_worker_niceness", "0")):
                ray.init(address="local", num_cpus=max(workers, 1), **kwargs)
    except Exception as exc:  # ConnectionError, TimeoutError, RuntimeError, ValueError, ...
        text = " ".join(str(exc).split())[:200]
        where = f"--address {address}" if address else "ray"
        hint = ("; a cluster with token authentication needs RAY_AUTH_MODE=token and its token"
                if address and "RAY_AUTH_MODE" not in os.environ else "")
        raise SgoneError(f"{where}: cannot {'join the Ray cluster' if address else 'start a local Ray cluster'} "
                         f"({type(exc).__name__}: {text}){hint}") from None
    return ray, True


def run_ray(todo: Sequence[Item], output: LabelOutput, spec: LabelSpec, workers: int = 2, batch_size: int = 4,
            address: str | None = None, stop_on_bad: bool = False,
            on_result: Callable[[Encoded], None] | None = None) -> None:
    """Label `todo` on a Ray cluster (joined at `address`, or a local one started for the run)."""
    if not todo:
        return
    ray, started = connect(address, workers)  # the command connects first: then nothing starts here
    try:
        from ray.data import ActorPoolStrategy, DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows one bar of its own
        context.print_on_execution_start = False
        for name in ("ray.data", "ray"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # its "progress bars disabled" warning: ours is on
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        items = [{"key": it.key, "path": it.path} for it in todo]
        # one block per batch (at most 32 per worker): small blocks keep every worker busy to the end
        blocks = min((len(items) + batch_size - 1) // batch_size, 32 * workers)
        dataset = ray.data.from_items(items, override_num_blocks=max(1, blocks))
        # the worker's own threads: one per CPU it reserves
        spec_for_workers = spec if spec.threads else replace(spec, threads=1)
        results = dataset.map_batches(LabelWorker, fn_constructor_kwargs={"spec": spec_for_workers},
                                      batch_size=batch_size, batch_format="numpy", num_cpus=1,
                                      compute=ActorPoolStrategy(size=workers))
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            for encoded in from_columns(batch, len(spec.classes)):
                if not output.commit(encoded):
                    continue
                if on_result:
                    on_result(encoded)
                if stop_on_bad and encoded.record["status"] == "error":
                    raise SgoneError(f"{encoded.record['error']} (stopped: --on-bad-input stop)")
    finally:
        if started:
            ray.shutdown()

