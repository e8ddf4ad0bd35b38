"""Faults and sustained load against beit-serve (the embedded Triton, supervised, behind its front door): a
killed stub or Triton comes back by itself, readiness tells the truth meanwhile, the SDK retries the window, a
SIGTERM drains, and a short soak leaks nothing. The longer runs: `make faults`, `make soak`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from beit_client import BeitClient, ModelNotReadyError, RetryPolicy, ServerUnavailableError
from beit_repository.names import NETWORK_MODEL, PREPROCESS_MODEL
from beit_serve import EmbeddedServer
from beit_serve.processes import stubs_of
from loadtest import faults, soak
from loadtest.beit_serve_process import BeitServe, beit_serve, readiness
from loadtest.processes import triton_of
from tests.conftest import free_port, run_probe
from tests.images import encode, photo

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
PATIENT = RetryPolicy(max_retries=10, initial_delay=0.2, max_delay=2.0)
"""Retries that outlast a recovery (about 25 s of waiting in all)."""


@pytest.fixture
def repository(tiny_repository: Path, tmp_path: Path) -> Path:
    """A copy of its own, so that no other test's stubs are counted or killed."""
    return Path(shutil.copytree(tiny_repository, tmp_path / "repository"))


class Load:
    """Threads classifying back to back over both protocols through the SDK, counting outcomes."""

    def __init__(self, serve: BeitServe, retry: RetryPolicy, threads: int = 4) -> None:
        self.image = encode(photo(320, 240, seed=5), "JPEG")
        self.urls = [serve.http_url, serve.grpc_url] * (threads // 2)
        self.retry = retry
        self.answered = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(url,)) for url in self.urls]

    def _run(self, url: str) -> None:
        with BeitClient(url, retry=self.retry, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    client.classify(self.image, top_k=3)
                    self.answered += 1
                except Exception as error:
                    self.errors.append(error)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_a_stub_killed_under_load_serves_again_by_itself_and_the_sdk_retries_the_window(repository: Path):
    with beit_serve(repository) as serve, Load(serve, PATIENT) as load:
        time.sleep(2)
        for model in (PREPROCESS_MODEL, NETWORK_MODEL):
            before = load.answered
            result = faults.FaultResult(model, *faults.kill(serve, model), at_s=0.0)
            killed_at = time.monotonic()
            faults.watch(serve, result, killed_at, killed_at + 8, interval=0.05)
            assert result.not_ready_after_s is not None and result.not_ready_after_s < 1.0, result.timeline
            assert result.answered_again_after_s is not None and result.answered_again_after_s < 30
            assert result.ready_again_after_s is not None and result.ready_again_after_s < 30
            assert result.lies_after_1s == 0, result.timeline
            assert load.answered > before
        assert load.errors == []
        assert run_probe(serve.http_url).returncode == 0


def test_triton_killed_is_restarted_and_readiness_is_false_until_it_answers(repository: Path):
    with beit_serve(repository) as serve, Load(serve, PATIENT, threads=2) as load:
        time.sleep(1)
        old = triton_of(serve.pid)
        result = faults.FaultResult("tritonserver", *faults.kill(serve, faults.TRITON), at_s=0.0)
        killed_at = time.monotonic()
        faults.watch(serve, result, killed_at, killed_at + 12, interval=0.05)
        assert result.answered_again_after_s is not None and result.answered_again_after_s < 30
        assert result.lies_after_1s == 0, result.timeline
        assert triton_of(serve.pid) not in (None, old)
        # Live throughout: beit-serve itself never stopped.
        assert readiness(serve.http_url, "/v2/health/live") == 200
    assert load.errors == []


def test_readiness_and_the_probe_refuse_while_a_model_reloads_over_both_protocols(repository: Path):
    import tritonclient.grpc as grpcclient

    with beit_serve(repository) as serve:
        triton = triton_of(serve.pid)
        assert triton is not None
        stub = next(s for s in stubs_of(triton) if s.model == NETWORK_MODEL)
        os.kill(stub.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while readiness(serve.http_url) == 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Within the reload (about 1.5 s here): every readiness route and the probe say no.
        assert readiness(serve.http_url) == 503
        assert readiness(serve.http_url, "/v2/models/beit/ready") == 503
        assert readiness(serve.http_url, "/v2/health/live") == 200
        grpc = grpcclient.InferenceServerClient(serve.grpc_url.removeprefix("grpc://"))
        assert grpc.is_server_ready() is False and grpc.is_model_ready("beit") is False
        assert grpc.is_server_live() is True
        probe = run_probe(serve.http_url)
        assert (
            probe.returncode == 1 and probe.stderr.startswith("not ready: ") and probe.stderr.count("\n") == 1
        )
        # Without retries left, the SDK reports the 503 of a live server whose model is unready as such.
        with BeitClient(serve.http_url, max_retries=0) as client, pytest.raises(ModelNotReadyError) as caught:
            client.classify(encode(photo(64, 48, seed=1), "PNG"))
        assert isinstance(caught.value.__cause__, ServerUnavailableError)
        assert caught.value.__cause__.status_code == 503
        deadline = time.monotonic() + 30
        while readiness(serve.http_url) != 200:
            assert time.monotonic() < deadline, "not ready again within 30 s"
            time.sleep(0.1)
        assert grpc.is_server_ready() is True
        assert run_probe(serve.http_url).returncode == 0


def test_the_probe_fails_where_triton_alone_reports_ready_after_a_stub_died(repository: Path, tmp_path: Path):
    """Unsupervised Triton 2.51 keeps answering ready with dead stubs (the issue's finding); the probe runs
    a real classification and says no. Every preprocessor instance's stub is killed: with one left alive,
    Triton would send the probe's request to it."""
    server = EmbeddedServer(
        repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), exit_timeout=1
    )
    with server:
        assert run_probe(server.http_url).returncode == 0
        for stub in server.stubs():
            if stub.model == PREPROCESS_MODEL:
                os.kill(stub.pid, signal.SIGKILL)
        time.sleep(0.5)
        assert server.is_ready(), "Triton 2.51 reports ready with a dead stub"
        probe = run_probe(server.http_url)
        assert probe.returncode == 1
        assert "not ready: " in probe.stderr and "beit/infer: HTTP 500" in probe.stderr


def test_the_probe_fails_with_one_line_when_nothing_listens():
    probe = run_probe(f"http://127.0.0.1:{free_port()}")
    assert probe.returncode == 1
    assert probe.stderr.startswith("not ready: ") and probe.stderr.count("\n") == 1


def test_a_locust_run_with_sdk_retries_crosses_stub_and_triton_kills_with_no_failed_call(
    repository: Path, tmp_path: Path
):
    args = faults.parse_arguments(
        ["--repository", str(repository), "--out", str(tmp_path), "--first-fault-s", "4", "--between-s", "10"]
    )
    report = faults.run(args)
    assert report["requests"] > 100
    assert report["checks"] == dict.fromkeys(report["checks"], True), faults.summary(report)
    assert [f["target"] for f in report["faults"]] == [PREPROCESS_MODEL, NETWORK_MODEL, faults.TRITON]


def test_sigterm_under_load_answers_in_flight_requests_refuses_new_ones_retryably_and_exits_0(
    repository: Path,
):
    import tritonclient.http as httpclient

    with beit_serve(repository, "--exit-timeout", "20") as serve:
        # Big photos in batches keep requests in flight for a while.
        images = [encode(photo(1920, 1080, seed=i), "JPEG") for i in range(16)]
        outcomes: list[Any] = []

        def batch(url: str) -> None:
            with BeitClient(url, max_retries=0, timeout=60) as client:
                try:
                    outcomes.append(client.classify(images, top_k=1))
                except Exception as error:
                    outcomes.append(error)

        in_flight = [
            threading.Thread(target=batch, args=(url,)) for url in (serve.http_url, serve.grpc_url) * 2
        ]
        for thread in in_flight:
            thread.start()
        time.sleep(0.3)
        serve.process.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        # New requests during the drain: refused with errors the SDK retries (ServerUnavailableError; with no
        # retry left, a live server's refusal ends as ModelNotReadyError caused by it).
        refused = []
        for url in (serve.http_url, serve.grpc_url):
            with BeitClient(url, max_retries=0) as client:
                with pytest.raises((ServerUnavailableError, ModelNotReadyError)) as caught:
                    client.classify(images[0])
                error = caught.value
                refused.append(error.__cause__ if isinstance(error, ModelNotReadyError) else error)
        ready = httpclient.InferenceServerClient(serve.http_url.removeprefix("http://")).is_server_ready()
        for thread in in_flight:
            thread.join()
        assert serve.process.wait(60) == 0
    assert ready is False
    assert [type(o) for o in outcomes] == [list] * 4, outcomes
    assert all(len(o) == 16 for o in outcomes)
    assert all(isinstance(e, ServerUnavailableError) for e in refused), refused
    assert {e.status_code for e in refused} <= {503, "UNAVAILABLE", None}


def test_a_short_soak_at_saturation_fails_nothing_and_leaks_nothing(repository: Path, tmp_path: Path):
    args = soak.parse_arguments(
        [
            "--repository",
            str(repository),
            "--out",
            str(tmp_path),
            "--hold-s",
            "30",
            "--window-s",
            "10",
            "--step-duration-s",
            "5",
            "--step-warmup-s",
            "1",
            "--sample-interval-s",
            "1",
            "--max-users",
            "4",
            # The search's mechanics, not this shared machine's figures: an SLO that two users keep.
            "--slo-p95-ms",
            "2000",
        ]
    )
    report = soak.run(args)
    # A p99 over 10 s (about 300 requests) is their third slowest: on a shared 2-core machine the 1.2x bound
    # is for the 10-minute run's one-minute windows (make soak); here a doubling still fails.
    ratio_check = next(name for name in report["checks"] if name.startswith("last-window p99"))
    assert report["latency"]["ratio"] <= 2.0, soak.summary(report)
    checks = {name: ok for name, ok in report["checks"].items() if name != ratio_check}
    assert checks == dict.fromkeys(checks, True), soak.summary(report)
    assert report["hold"]["requests"] > 500 and report["rss"]["samples"] >= 20
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "soak.json").read_text())["capacity"]["capacity"]["users"] >= 2


def test_an_explicit_tritonserver_binary_is_supervised_the_same(
    repository: Path, tmp_path: Path, monkeypatch
):
    """`--tritonserver PATH --backend-directory DIR`, as in the Triton container (whose image sets
    LD_LIBRARY_PATH): here the wheel's binary, given explicitly, with a backend directory laid out by hand."""
    from beit_serve import distribution

    backends = distribution.prepare_backend_directory(tmp_path / "backends")
    monkeypatch.setenv("LD_LIBRARY_PATH", distribution.library_path())
    binary = str(distribution.tritonserver_binary())
    with beit_serve(repository, "--tritonserver", binary, "--backend-directory", str(backends)) as serve:
        triton = triton_of(serve.pid)
        assert triton is not None and Path(f"/proc/{triton}/exe").resolve() == Path(binary).resolve()
        result = faults.FaultResult(PREPROCESS_MODEL, *faults.kill(serve, PREPROCESS_MODEL), at_s=0.0)
        killed_at = time.monotonic()
        faults.watch(serve, result, killed_at, killed_at + 6, interval=0.05)
        assert result.answered_again_after_s is not None and result.lies_after_1s == 0, result.timeline
        assert run_probe(serve.http_url).returncode == 0
        assert serve.stop() == 0


def test_metrics_stay_on_the_public_address_while_http_and_grpc_are_behind_the_gateway(repository: Path):
    import urllib.request

    metrics_port = free_port()
    with beit_serve(repository, "--metrics-port", str(metrics_port)) as serve:
        triton = triton_of(serve.pid)
        assert triton is not None
        argv = Path(f"/proc/{triton}/cmdline").read_bytes().split(b"\0")
        assert b"--http-address=127.0.0.1" in argv and b"--metrics-address=0.0.0.0" in argv
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            assert b"nv_inference_request_success" in response.read()
