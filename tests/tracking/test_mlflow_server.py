"""A real MLflow tracking server (`mlflow server`, SQLite backend, proxied artifacts): a tiny run logs through it,
and its REST API returns the run, its metrics and its artifact."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from integration_helpers import clean_env, free_port, tiny

from mta_lab.conf import load_run_config
from mta_lab.train.entry import train


def _mlflow_executable() -> str:
    local = Path(sys.executable).with_name("mlflow")
    return str(local) if local.exists() else (shutil.which("mlflow") or pytest.skip("no mlflow executable"))


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _post(url: str, body: dict, timeout: float = 10) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture
def mlflow_server(tmp_path):
    """http://127.0.0.1:<port> of a server started for this test and stopped (its whole process group) after."""
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [_mlflow_executable(), "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}):\n{(tmp_path / 'server.log').read_text()}")
            try:
                if _get(f"{url}/health", timeout=2).strip() == b"OK":
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after 90 s:\n{(tmp_path / 'server.log').read_text()}")
            time.sleep(0.25)
        yield url
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)  # its own session: the server and the workers it started
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def test_a_run_logged_through_a_tracking_server(mlflow_server, tmp_path, data_cache):
    overrides = tiny(tmp_path / "runs", "served", data_cache, max_steps=20)
    config = load_run_config([*overrides, f"tracking.uri={mlflow_server}"])
    result = train(config, progress=False)
    assert result.tracking_uri == mlflow_server
    assert not (tmp_path / "runs" / "mlflow.db").exists()  # nothing tracked beside the runs

    api = f"{mlflow_server}/api/2.0/mlflow"
    experiment = json.loads(_get(f"{api}/experiments/get-by-name?experiment_name=mta-lab"))["experiment"]
    found = _post(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})
    [run] = found["runs"]
    info, data = run["info"], run["data"]
    assert info["run_id"] == result.run_id
    assert info["status"] == "FINISHED" and info["run_name"] == "served"
    tags = {t["key"]: t["value"] for t in data["tags"]}
    assert tags["mta.variant"] == "transformer" and tags["mta.size"] == "tiny" and tags["mta.seed"] == "0"
    params = {p["key"]: p["value"] for p in data["params"]}
    assert params["model.dim"] == "64" and params["train.tokens_per_step"] == str(4 * 64)
    metrics = {m["key"]: m for m in data["metrics"]}  # the latest value of each
    assert metrics["final/steps"]["value"] == 20
    assert metrics["final/train_loss"]["value"] == pytest.approx(result.metrics["final/train_loss"], rel=1e-6)

    points = json.loads(_get(f"{api}/metrics/get-history?run_id={result.run_id}&metric_key=train/loss"))["metrics"]
    steps = sorted(p["step"] for p in points)
    assert len(steps) == len(set(steps)) == 20
    by_step = {p["step"]: p["value"] for p in points}
    assert by_step[steps[-1]] < by_step[steps[0]]

    artifacts = json.loads(_get(f"{api}/artifacts/list?run_id={result.run_id}"))
    assert [f["path"] for f in artifacts.get("files", [])] == ["config.yaml"]
    assert list((tmp_path / "artifacts").rglob("config.yaml"))  # proxied to the server's artifact store
