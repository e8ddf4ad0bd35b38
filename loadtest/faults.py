"""Faults under load: kill -9 a Python-backend stub of each model, then Triton itself, while Locust users
with SDK retries on classify through beit-serve; measure how long serving was lost and whether readiness
told the truth meanwhile.

    python -m loadtest.faults --repository DIR --out results/faults             # make faults

For each fault it records, from the moment of the kill: when readiness (`/v2/health/ready` through the
gateway) first said not-ready, when it said ready again, and when a raw classification without retries
(`beit-serve probe`'s request) first answered again. A sampler pairs readiness with that classification every
`--watch-interval-s`: a pair where readiness said ready and the classification failed is a lie. The Locust run
must end with 0 failed calls. Writes faults.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from beit_repository.names import NETWORK_MODEL, PREPROCESS_MODEL
from beit_serve.probe import ProbeFailed, probe
from beit_serve.processes import stubs_of
from loadtest.beit_serve_process import BeitServe, beit_serve, readiness, run_locust
from loadtest.processes import triton_of

ROOT = Path(__file__).resolve().parent.parent
TRITON = "tritonserver"
MAX_RECOVERY_S = 30.0


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.faults", description=__doc__)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("results/faults"))
    parser.add_argument("--users", type=int, default=4, help="Locust users, HTTP and gRPC half each")
    parser.add_argument("--sdk-max-retries", type=int, default=8)
    parser.add_argument(
        "--faults",
        default=f"{PREPROCESS_MODEL},{NETWORK_MODEL},{TRITON}",
        help="what to kill, in order: model names (one of its stubs) or 'tritonserver'",
    )
    parser.add_argument("--first-fault-s", type=float, default=15.0, help="into the load")
    parser.add_argument("--between-s", type=float, default=30.0, help="between faults, and after the last")
    parser.add_argument("--watch-interval-s", type=float, default=0.1)
    return parser.parse_args(argv)


@dataclass
class FaultResult:
    target: str
    killed: str
    pid: int
    at_s: float
    """Seconds into the load."""
    not_ready_after_s: float | None = None
    ready_again_after_s: float | None = None
    answered_again_after_s: float | None = None
    lies_after_1s: int = 0
    """Samples (after the first second) where readiness said ready and a classification failed."""
    samples: int = 0
    timeline: list[tuple[float, str]] = field(default_factory=list)
    """(seconds after the kill, what changed): readiness and classification, each change."""


def kill(serve: BeitServe, target: str) -> tuple[str, int]:
    triton = triton_of(serve.pid)
    if triton is None:
        raise RuntimeError("beit-serve runs no Triton")
    if target == TRITON:
        os.kill(triton, signal.SIGKILL)
        return TRITON, triton
    stub = next((s for s in stubs_of(triton) if s.model == target), None)
    if stub is None:
        raise RuntimeError(f"no Python-backend stub of {target} in Triton {triton}")
    os.kill(stub.pid, signal.SIGKILL)
    return stub.instance, stub.pid


def watch(serve: BeitServe, result: FaultResult, killed_at: float, until: float, interval: float) -> None:
    """Until `until` (monotonic): readiness every `interval` in one thread, and back-to-back classifications
    without retries (the probe's request) in another, each stamped with the second it was asked."""
    readings: list[tuple[float, str]] = []
    answers: list[tuple[float, float, bool]] = []

    def read_readiness() -> None:
        while time.monotonic() < until:
            asked = time.monotonic() - killed_at
            readings.append((asked, str(readiness(serve.http_url, timeout=5))))
            time.sleep(interval)

    def classify() -> None:
        while time.monotonic() < until:
            asked = time.monotonic() - killed_at
            try:
                probe(serve.http_url, 10.0, {})
                answered = True
            except ProbeFailed:
                answered = False
            answers.append((asked, time.monotonic() - killed_at, answered))
            time.sleep(interval)

    threads = [threading.Thread(target=read_readiness), threading.Thread(target=classify)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.samples = len(readings)
    result.not_ready_after_s = next((t for t, ready in readings if ready != "200"), None)
    if result.not_ready_after_s is not None:
        result.ready_again_after_s = next(
            (t for t, ready in readings if t > result.not_ready_after_s and ready == "200"), None
        )
    first_failure = next((asked for asked, _, ok in answers if not ok), None)
    if first_failure is not None:
        result.answered_again_after_s = next(
            (done for asked, done, ok in answers if asked > first_failure and ok), None
        )
    for asked, _, ok in answers:
        said = [ready for t, ready in readings if t <= asked]
        if not ok and asked > 1.0 and said and said[-1] == "200":
            result.lies_after_1s += 1
    events = sorted(
        [(t, f"ready {ready}") for t, ready in readings] + [(a, f"answered {ok}") for a, _, ok in answers]
    )
    last: dict[str, str] = {}
    for t, event in events:
        kind = event.split()[0]
        if last.get(kind) != event:
            result.timeline.append((round(t, 3), event))
            last[kind] = event


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    targets = [t for t in args.faults.split(",") if t]
    duration = args.first_fault_s + args.between_s * len(targets)
    results: list[FaultResult] = []
    with beit_serve(args.repository, log=args.out / "beit-serve.log") as serve:
        timeline_file = args.out / "timeline.json"
        command = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            f"{ROOT}/loadtest/locustfile.py,{ROOT}/loadtest/timeline.py",
            "--headless",
            "--host",
            serve.http_url,
            "--grpc-host",
            serve.grpc_url,
            "-u",
            str(args.users),
            "-r",
            str(args.users),
            "-t",
            f"{int(duration)}s",
            "--corpus-size",
            "16",
            "--sdk-max-retries",
            str(args.sdk_max_retries),
            "--timeline-file",
            str(timeline_file),
            "--csv",
            str(args.out / "locust"),
        ]
        outcome: list[int] = []
        runner = threading.Thread(
            target=lambda: outcome.append(run_locust(command, args.out / "locust.log", duration + 300, ROOT))
        )
        runner.start()
        # Locust starts its users once it has imported everything and built its corpus: wait for load.
        started = _wait_for_load(runner, serve)
        for index, target in enumerate(targets):
            fault_at = started + args.first_fault_s + index * args.between_s
            time.sleep(max(0.0, fault_at - time.monotonic()))
            killed, pid = kill(serve, target)
            killed_at = time.monotonic()
            result = FaultResult(target, killed, pid, round(killed_at - started, 2))
            watch(serve, result, killed_at, killed_at + args.between_s - 2, args.watch_interval_s)
            results.append(result)
        runner.join()
        locust_code = outcome[0] if outcome else None
    timeline = json.loads(timeline_file.read_text())
    requests = sum(v["requests"] for v in timeline["seconds"].values())
    failures = sum(v["failures"] for v in timeline["seconds"].values())
    checks = {
        "0 failed calls (SDK retries on)": failures == 0 and requests > 0,
        f"every fault served again within {MAX_RECOVERY_S:.0f} s": all(
            r.answered_again_after_s is not None and r.answered_again_after_s <= MAX_RECOVERY_S
            for r in results
        ),
        "readiness went false within 1 s of every kill": all(
            r.not_ready_after_s is not None and r.not_ready_after_s <= 1.0 for r in results
        ),
        "readiness never said ready while classification failed (after 1 s)": all(
            r.lies_after_1s == 0 for r in results
        ),
    }
    report = {
        "users": args.users,
        "sdk_max_retries": args.sdk_max_retries,
        "duration_s": duration,
        "requests": requests,
        "failures": failures,
        "errors": timeline.get("errors", {}),
        "locust_exit_code": locust_code,
        "faults": [asdict(r) for r in results],
        "checks": checks,
    }
    (args.out / "faults.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _wait_for_load(runner: threading.Thread, serve: BeitServe) -> float:
    """When Locust's users started sending (it first imports and builds its corpus): the moment Triton's
    success count for `beit` moves (the statistics API, open without --admin-key)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not runner.is_alive():
            raise RuntimeError("Locust ended before loading the server")
        if _statistics_requests(serve) > 0:
            return time.monotonic()
        time.sleep(0.2)
    raise TimeoutError("Locust sent no request within 120 s")


def _statistics_requests(serve: BeitServe) -> int:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{serve.http_url}/v2/models/beit/stats", timeout=2) as response:
            stats = json.loads(response.read())
    except OSError:
        return 0
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])


def summary(report: dict[str, Any]) -> str:
    lines = [
        f"{report['users']} users, SDK retries {report['sdk_max_retries']}, {report['duration_s']:.0f} s: "
        f"{report['requests']} calls, {report['failures']} failed",
        f"{'killed':<22} {'at s':>6} {'not ready after s':>18} {'ready again s':>14} {'answers again s':>16}"
        f" {'lies':>5}",
    ]
    for fault in report["faults"]:

        def seconds(value: float | None) -> str:
            return "never" if value is None else f"{value:.2f}"

        lines.append(
            f"{fault['killed']:<22} {fault['at_s']:>6.1f} {seconds(fault['not_ready_after_s']):>18} "
            f"{seconds(fault['ready_again_after_s']):>14} {seconds(fault['answered_again_after_s']):>16} "
            f"{fault['lies_after_1s']:>5}"
        )
    lines += [f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in report["checks"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    report = run(args)
    print(summary(report))
    print(f"written: {args.out / 'faults.json'}")
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
