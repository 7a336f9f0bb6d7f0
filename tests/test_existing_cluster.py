"""`--scheduler ADDRESS`: a scheduler and workers started as separate `dask` processes get the same
worker hygiene as the local cluster (thread environment, private numba cache, warm-up, isolation)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from accounting import assert_accounted
from conftest import TESTS_DIR, tone_mix, write_audio

from mirflow.pipeline.runner import ClusterOptions, analyze

pytestmark = pytest.mark.slow

DASK = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")

PIPELINE = """
name: remote
runtime: {timeout_s: 120, retries: 1}
extractors:
  - metadata
  - name: test_misbehave
"""


def _worker_facts():
    import os as _os

    from mirflow.pipeline import task

    return {"omp": _os.environ.get("OMP_NUM_THREADS"), "numba": _os.environ.get("NUMBA_CACHE_DIR", ""),
            "warmed": sorted(task._WARMED)}


@pytest.mark.skipif(DASK is None, reason="needs the dask command line")
def test_separate_scheduler_and_workers_get_the_worker_hygiene(tmp_path, caplog, monkeypatch):
    from distributed import Client

    from mirflow.extractors import registry

    monkeypatch.setenv("MIRFLOW_PLUGINS", "mirflow_test_plugins")
    monkeypatch.setattr(registry, "_plugins_loaded", False)

    env = {**os.environ, "MIRFLOW_PLUGINS": "mirflow_test_plugins",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))}
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_CACHE_DIR"):
        env.pop(key, None)  # as on a cluster nobody prepared for mirflow
    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([DASK, "scheduler", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1",
                               "--port", "0", "--dashboard-address", "127.0.0.1:0"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]

    def start_worker(name: str) -> None:
        procs.append(subprocess.Popen([DASK, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                       "--nworkers", "1", "--name", name, "--host", "127.0.0.1",
                                       "--dashboard-address", "127.0.0.1:0"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    try:
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        start_worker("w1")
        music = tmp_path / "music"
        for i in range(4):
            write_audio(music / f"t{i}.wav", tone_mix(1.0, freqs=(200.0 + 30 * i, 300.0), seed=i))
        write_audio(music / "native_crash.wav", tone_mix(1.0, seed=9))  # kills its worker process
        pipeline = tmp_path / "remote.yaml"
        pipeline.write_text(PIPELINE)
        opts = ClusterOptions(scheduler=address, dashboard=False)
        with Client(address) as client:
            client.wait_for_workers(1, timeout=60)
            with caplog.at_level("WARNING", logger="mirflow.pipeline.runner"):
                summary, _ = analyze([music], tmp_path / "cat", pipeline=str(pipeline), cluster=opts)
            assert "allowed_failures" in caplog.text  # the scheduler's own setting differs and is named
            # Poison-pill isolation on someone else's cluster: the crasher fails alone.
            assert summary.analyzed == 4 and summary.failed == 1
            assert_accounted(tmp_path / "cat", [music], summary)
            # A worker that joins later gets the same treatment before its first track.
            start_worker("w2")
            client.wait_for_workers(2, timeout=60)
            (music / "native_crash.wav").unlink()
            analyze([music], tmp_path / "cat", pipeline=str(pipeline), cluster=opts, force=True)
            facts = client.run(_worker_facts)
        assert len(facts) == 2
        for worker, fact in facts.items():
            assert fact["omp"] == "1", (worker, fact)
            assert "mirflow-numba" in fact["numba"], (worker, fact)
        # Models are loaded in every worker that analyzed a track (warm-up stage or first task).
        assert all(f["warmed"] for f in facts.values()), facts
        assert len({f["numba"] for f in facts.values()}) == 2  # private per worker
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


_CLAIM = """
import sys
from mirflow.pipeline.worker import claim_numba_cache_dir
print(claim_numba_cache_dir(sys.argv[1]), flush=True)
sys.stdin.read()  # holds the folder until the test closes stdin
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the folders are claimed with fcntl locks")
def test_two_live_workers_of_one_name_get_different_numba_caches_and_the_name_is_reused():
    """Two clusters on one machine name their workers alike (0, 1, ...): each live process gets its own cache."""
    name = f"probe-{os.getpid()}-{time.time_ns()}"

    def claim() -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen([sys.executable, "-c", _CLAIM, name], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        return proc, proc.stdout.readline().strip()

    first, first_dir = claim()
    second, second_dir = claim()
    try:
        assert first_dir.endswith(name) and second_dir.endswith(f"{name}.1")
    finally:
        for proc in (first, second):
            proc.stdin.close()
            proc.wait(timeout=30)
    third, third_dir = claim()  # the first folder is free again once its process has ended
    third.stdin.close()
    third.wait(timeout=30)
    assert third_dir == first_dir
    for folder in {first_dir, second_dir}:
        shutil.rmtree(folder, ignore_errors=True)
