"""Usage (issue 18 item 5): the sampler's records of CPU and memory per process, read back as
tidy series with DuckDB; a killed process's segment stays readable; per-deployment figures from
the prediction log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import prediction_log, segments, usage
from core.store import Store
from core.workspace import Workspace
from tests.conftest import DeployChurn


def burn(cpu_seconds: float) -> None:
    """Spin until this process has used `cpu_seconds` more CPU (no wall-clock assumption)."""
    until = time.process_time() + cpu_seconds
    while time.process_time() < until:
        sum(i * i for i in range(1000))


def test_the_sampler_records_rising_cpu_per_process(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    api = usage.Sampler(workspace, "api", every=0.02).start()
    worker = usage.Sampler(workspace, "worker", every=0.02, children=True).start()
    burn(0.3)
    api.stop()
    worker.stop()
    rows = usage.series(workspace, process="api").to_pylist()
    assert len(rows) >= 3 and {r["process"] for r in rows} == {"api"}
    assert {r["pid"] for r in rows} == {os.getpid()}
    cpu = [r["cpu_seconds"] for r in rows]
    assert cpu == sorted(cpu) and cpu[-1] - cpu[0] >= 0.2
    assert max(r["cpu_percent"] for r in rows) > 0 and min(r["rss_bytes"] for r in rows) > 0
    both = usage.series(workspace)
    assert set(both.column("process").to_pylist()) == {"api", "worker"}
    assert usage.series(workspace, start=rows[-1]["sampled_at"]).num_rows >= 1
    assert segments.open_segments(usage.folder(workspace)) == []  # stop closes the segment


CHILD = """
import sys
from pathlib import Path
from core import usage
from core.workspace import Workspace
usage.Sampler(Workspace(Path(sys.argv[1])), "worker", every=0.02).start()
while True:
    sum(i * i for i in range(1000))
"""


def test_a_killed_process_leaves_a_readable_segment(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            found = segments.open_segments(usage.folder(workspace))
            if found and found[0].read_bytes().count(b"\n") >= 5:
                break
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    [segment] = segments.open_segments(usage.folder(workspace))
    with segment.open("ab") as f:
        f.write(b'{"sampled_at": "2026-12-06T10:00:00", "process": "wor')  # killed mid-write
    assert segments.closed_segments(usage.folder(workspace)) == [segment]  # its process is gone
    rows = usage.series(workspace).to_pylist()
    assert len(rows) >= 5 and {r["pid"] for r in rows} == {child.pid}
    cpu = [r["cpu_seconds"] for r in rows]
    assert cpu == sorted(cpu) and cpu[-1] > cpu[0]
    assert usage.compact(workspace) == 1  # the worker's full check: Parquet, segment gone
    assert segments.every_segment(usage.folder(workspace)) == []
    assert usage.series(workspace).to_pylist() == rows


def test_deployment_usage_from_the_prediction_log(
    trained_store: Store, deploy_churn: DeployChurn
) -> None:
    deployed = deploy_churn("gradient_boosting", challenger="linear")
    log = prediction_log.PredictionLog(trained_store.workspace)
    for i, (rows, latency, cpu) in enumerate([(1, 1.0, 0.5), (3, 2.0, 1.5), (2, 3.0, 1.0)]):
        log.write(
            {
                "kind": "main",
                "logged_at": f"2026-12-06T10:00:0{i}",
                "request_id": f"r{i}",
                "deployment_id": deployed.id,
                "source": "api",
                "rows": rows,
                "status": 200,
                "latency_ms": latency,
                "cpu_ms": cpu,
            }
        )
    log.write({"kind": "main", "logged_at": "2026-12-06T10:00:09", "deployment_id": "other"})
    log.close()
    found = usage.deployment_usage(trained_store, deployed.id)
    assert (found["requests"], found["rows"]) == (3, 6)
    assert found["cpu_seconds"] == pytest.approx(0.003)
    assert found["p50_ms"] == pytest.approx(2.0) and found["p99_ms"] == pytest.approx(2.98)
    assert set(found["model_bytes"]) == {"main", "challenger"}
    assert all(size > 1000 for size in found["model_bytes"].values())
