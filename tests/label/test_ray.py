"""`sgone label --engine ray` on a local Ray cluster (2 CPUs) that this module starts once.

Skipped only where `ray` is not importable, and then it FAILS under CI (the CI installs the
`sgone[ray]` extra, so a missing ray there is a broken setup, not an optional feature).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from sgone.cli import main
from tests.label.conftest import index, journal, label_args

try:
    import ray
    import ray.data  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise RuntimeError(f"CI is set but ray is not importable ({exc}); install the sgone[ray] extra") from None
    pytest.skip(f"ray is not installed (pip install 'sgone[ray]'): {exc}", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("need_model")


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module, started as `--engine ray` starts one: 2 CPUs, as on the
    project's machine."""
    from sgone.label.ray_engine import connect

    before = os.environ.get("RAY_worker_niceness")
    assert connect(None, 2)[1]
    yield before
    ray.shutdown()


def test_unreachable_address(collection, capsys):
    """--address of a cluster that is not there: one line within seconds, nothing written.
    (First in the module: it needs a driver that has not joined a cluster yet.)"""
    assert not ray.is_initialized()
    out = collection / "out"
    start = time.monotonic()
    assert main(label_args(collection, out, "--engine", "ray", "--address", "127.0.0.1:9")) == 2
    err = capsys.readouterr().err.strip()
    assert "--address 127.0.0.1:9: cannot join the Ray cluster" in err and len(err.splitlines()) == 1, err
    assert time.monotonic() - start < 30
    assert not out.exists()
    assert main(label_args(collection, out, "--engine", "ray", "--address", "nonsense")) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_killed_worker_loses_nothing(cluster, tmp_path):
    """SIGKILL one worker mid-run: Ray Data restarts it and re-runs its batch; every image is
    stored exactly once, and the result equals the local engine's."""
    from PIL import Image

    from tests.label.conftest import scene

    support, disc = scene(64, 80, 30, 36, 16, seed=1)
    Image.fromarray(support).save(tmp_path / "support.png")
    Image.fromarray(disc * 255).save(tmp_path / "support_mask.png")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(40):
        image, _ = scene(64, 96, 30, 30 + i % 30, 13, seed=100 + i)
        Image.fromarray(image).save(photos / f"q{i:02d}.png")
    out = tmp_path / "ray"
    argv = label_args(tmp_path, out, "--engine", "ray", "--workers", "2", "--batch-size", "1")
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("rc", main(argv)))
    runner.start()
    killed, seen_at_kill = None, None
    deadline = time.monotonic() + 120
    while runner.is_alive() and time.monotonic() < deadline:
        records = journal(out)
        if records:
            host_pid = records[0]["worker"].rsplit(":", 1)
            killed, seen_at_kill = int(host_pid[1]), len(records)
            assert killed != os.getpid()  # a worker process, not this driver
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.005)
    runner.join(timeout=300)
    assert result.get("rc") == 0
    assert killed is not None and seen_at_kill < 40, "the worker was not killed mid-run"
    records = journal(out)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 40  # each image stored exactly once
    assert {r["status"] for r in records} == {"done"}
    workers = {r["worker"] for r in records}
    assert len(workers) >= 2
    assert all((out / "masks" / f"{k}.png").is_file() for k in keys)
    local = tmp_path / "local"
    assert main(label_args(tmp_path, local)) == 0
    assert (local / "annotations.json").read_text() == (out / "annotations.json").read_text()
    assert [{k: v for k, v in line.items() if k != "seconds"} for line in index(local)] == \
        [{k: v for k, v in line.items() if k != "seconds"} for line in index(out)]


def test_ray_resume_and_bad_input(cluster, collection, capsys):
    """The ray engine keeps the output folder's rules: a rerun skips what the local engine did,
    an unreadable file is recorded and the rest is labelled."""
    (collection / "photos" / "b" / "broken.png").write_bytes(b"broken")
    (collection / "photos" / "half.txt").write_text("a/q0.png\na/q1.png\na/q2.png\n")
    out = collection / "out"
    assert main(label_args(collection, out, inputs=("photos/half.txt",))) == 0
    capsys.readouterr()
    assert main(label_args(collection, out, "--engine", "ray", "--workers", "1")) == 0
    assert "7 image(s): 3 done before, 4 left (ray engine)" in capsys.readouterr().out
    records = journal(out)
    assert sorted(r["key"] for r in records[3:]) == ["b/broken.png", "b/q3.png", "b/q4.png", "b/q5.png"]
    lines = {line["path"]: line for line in index(out)}
    assert lines["b/broken.png"]["status"] == "error" and "b/broken.png" in lines["b/broken.png"]["error"]
    assert sum(line["status"] == "done" for line in lines.values()) == 6


def test_local_cluster_workers_at_normal_priority(cluster):
    """The cluster started for the job runs its workers at nice 0 (Ray's default, 15, starves them
    beside any other busy process), and the driver's environment is left as it was."""
    assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == int(cluster or 0)
    assert os.environ.get("RAY_worker_niceness") == cluster


def test_environment_is_restored(monkeypatch):
    from sgone.label.ray_engine import environment

    monkeypatch.setenv("SGONE_A", "before")
    monkeypatch.delenv("SGONE_B", raising=False)
    with environment(SGONE_A="during", SGONE_B="set"):
        assert os.environ["SGONE_A"] == "during" and os.environ["SGONE_B"] == "set"
    assert os.environ["SGONE_A"] == "before" and "SGONE_B" not in os.environ
