"""Soak: find the saturation load with loadtest/shape.py, hold it, and see whether anything leaks.

    python -m loadtest.soak --repository DIR --out results/soak                  # make soak: 10 minutes
    python -m loadtest.soak --repository DIR --hold-s 60 --window-s 20 ...       # the test suite's version

Against a beit-serve it starts (the embedded Triton behind its gateway): Locust steps HTTP and gRPC users up
until p95 breaks `--slo-p95-ms` (the capacity step of loadtest/shape.py), then holds the capacity's users for
`--hold-s` with SDK retries off, while Triton and every stub are sampled every `--sample-interval-s`. It
writes soak.json and soak.png (RSS and latency over time) and checks:

- no failed request;
- RSS of Triton plus every stub grows at most 5% after the first window: the mean of the last window against
  the mean of the window after the first (single readings move by a few percent, so means and the fitted
  trend are reported, with the highest reading);
- open files of Triton and the stubs back to their pre-load count once the load stops, and none of the
  stubs' /dev/shm regions left once the server stops;
- p99 of the last window at most 1.2x the p99 of the first.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from beit_serve.server import shm_regions
from loadtest.beit_serve_process import BeitServe, beit_serve, run_locust
from loadtest.capacity import histogram_percentile
from loadtest.processes import Sample, sample

ROOT = Path(__file__).resolve().parent.parent
MAX_RSS_GROWTH = 0.05
MAX_P99_RATIO = 1.2
MB = 2**20


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__)
    parser.add_argument("--repository", type=Path, required=True, help="a built model repository")
    parser.add_argument("--out", type=Path, default=Path("results/soak"))
    parser.add_argument("--hold-s", type=float, default=600.0, help="how long the saturation load is held")
    parser.add_argument("--window-s", type=float, default=60.0, help="first/last window compared")
    parser.add_argument("--sample-interval-s", type=float, default=2.0)
    parser.add_argument("--users", type=int, default=0, help="hold this many users; 0: find the capacity")
    parser.add_argument("--slo-p95-ms", type=float, default=100.0, help="the capacity search's p95 SLO")
    parser.add_argument("--step-users", type=int, default=2)
    parser.add_argument("--step-duration-s", type=float, default=20.0)
    parser.add_argument("--step-warmup-s", type=float, default=5.0)
    parser.add_argument("--max-users", type=int, default=16)
    parser.add_argument("--corpus-size", type=int, default=32)
    return parser.parse_args(argv)


def locust(serve: BeitServe, out: Path, name: str, timeout: float, *args: str) -> int:
    command = [
        sys.executable,
        "-m",
        "locust",
        "--headless",
        "--host",
        serve.http_url,
        "--grpc-host",
        serve.grpc_url,
        "--csv",
        str(out / name),
        *args,
    ]
    return run_locust(command, out / f"{name}.log", timeout, ROOT)


def find_capacity(serve: BeitServe, args: argparse.Namespace) -> dict[str, Any]:
    capacity_file = args.out / "capacity.json"
    locust(
        serve,
        args.out,
        "capacity",
        args.step_duration_s * (args.max_users // args.step_users + 1) + 300,
        "-f",
        f"{ROOT}/loadtest/locustfile.py,{ROOT}/loadtest/shape.py",
        "--corpus-size",
        str(args.corpus_size),
        "--slo-p95-ms",
        str(args.slo_p95_ms),
        "--step-users",
        str(args.step_users),
        "--step-duration-s",
        str(args.step_duration_s),
        "--step-warmup-s",
        str(args.step_warmup_s),
        "--max-users",
        str(args.max_users),
        "--capacity-file",
        str(capacity_file),
    )
    report: dict[str, Any] = json.loads(capacity_file.read_text())
    return report


class Sampler:
    """Samples a beit-serve every `interval` seconds in a thread; times are Unix time, which the Locust
    timeline also keeps."""

    def __init__(self, serve: BeitServe, interval: float) -> None:
        self.serve = serve
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            reading = sample(self.serve.pid, time.time())
            if reading is not None:
                self.samples.append(reading)
            if self._stop.wait(self.interval):
                return


@dataclass(frozen=True)
class RssTrend:
    reference_mb: float
    """Mean over the window after the first one."""
    last_mb: float
    """Mean over the last window."""
    growth: float
    max_mb: float
    slope_mb_per_min: float
    """Least-squares slope of every reading after the first window."""
    trend_over_hold: float
    """The slope over the time after the first window, as a fraction of the reference."""


def rss_trend(samples: list[Sample], window_s: float, hold_s: float) -> RssTrend:
    after_first = [s for s in samples if s.time_s >= window_s]
    reference = [s.rss for s in after_first if s.time_s < 2 * window_s] or [after_first[0].rss]
    last = [s.rss for s in samples if s.time_s >= hold_s - window_s] or [samples[-1].rss]
    reference_mb = sum(reference) / len(reference) / MB
    last_mb = sum(last) / len(last) / MB
    times = [s.time_s / 60 for s in after_first]
    values = [s.rss / MB for s in after_first]
    mean_t, mean_v = sum(times) / len(times), sum(values) / len(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    slope = (
        sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / spread
        if spread
        else 0.0
    )
    return RssTrend(
        reference_mb=reference_mb,
        last_mb=last_mb,
        growth=last_mb / reference_mb - 1,
        max_mb=max(values) if values else last_mb,
        slope_mb_per_min=slope,
        trend_over_hold=slope * (hold_s - window_s) / 60 / reference_mb,
    )


def window_histogram(seconds: dict[str, dict[str, Any]], start: float, end: float) -> dict[int, int]:
    merged: dict[int, int] = {}
    for second, values in seconds.items():
        if start <= int(second) < end:
            for ms, count in values["times"].items():
                merged[int(ms)] = merged.get(int(ms), 0) + count
    return merged


def latency_windows(timeline: dict[str, Any], window_s: float, hold_s: float) -> list[dict[str, float]]:
    """Requests, failures, p50 and p99 per `window_s` of the hold."""
    seconds: dict[str, dict[str, Any]] = timeline["seconds"]
    windows = []
    start = 0.0
    while start < hold_s - 1e-9:
        end = min(start + window_s, hold_s)
        histogram = window_histogram(seconds, start, end)
        in_window = [v for s, v in seconds.items() if start <= int(s) < end]
        windows.append(
            {
                "start_s": start,
                "end_s": end,
                "requests": sum(v["requests"] for v in in_window),
                "failures": sum(v["failures"] for v in in_window),
                "p50_ms": float(histogram_percentile(histogram, 0.50)) if histogram else 0.0,
                "p99_ms": float(histogram_percentile(histogram, 0.99)) if histogram else 0.0,
            }
        )
        start = end
    return windows


def plot(path: Path, samples: list[Sample], windows: list[dict[str, float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (memory, latency) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    times = [s.time_s for s in samples]
    memory.plot(times, [s.rss / MB for s in samples], label="Triton + stubs")
    memory.plot(times, [s.triton_rss / MB for s in samples], label="Triton")
    memory.plot(times, [s.stubs_rss / MB for s in samples], label="stubs")
    memory.set_ylabel("RSS (MB)")
    memory.set_ylim(bottom=0)
    memory.legend()
    memory.set_title(title)
    middles = [(w["start_s"] + w["end_s"]) / 2 for w in windows]
    latency.plot(middles, [w["p50_ms"] for w in windows], marker="o", label="p50")
    latency.plot(middles, [w["p99_ms"] for w in windows], marker="o", label="p99")
    latency.set_ylabel("latency (ms)")
    latency.set_xlabel("seconds into the hold")
    latency.set_ylim(bottom=0)
    latency.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    shm_before_start = shm_regions()
    with beit_serve(args.repository, log=args.out / "beit-serve.log") as serve:
        capacity: dict[str, Any] | None = None
        users = args.users
        if not users:
            capacity = find_capacity(serve, args)
            found = capacity.get("capacity")
            users = int(found["users"]) if found else args.step_users
        time.sleep(2)
        baseline = sample(serve.pid, 0.0)
        assert baseline is not None, "beit-serve runs a Triton"
        timeline_file = args.out / "timeline.json"
        with Sampler(serve, args.sample_interval_s) as sampler:
            locust_code = locust(
                serve,
                args.out,
                "hold",
                args.hold_s + 300,
                "-f",
                f"{ROOT}/loadtest/locustfile.py,{ROOT}/loadtest/timeline.py",
                "--corpus-size",
                str(args.corpus_size),
                "-u",
                str(users),
                "-r",
                str(users),
                "-t",
                f"{int(args.hold_s)}s",
                "--timeline-file",
                str(timeline_file),
            )
        time.sleep(3)
        after_load = sample(serve.pid, 0.0)
        assert after_load is not None, "beit-serve still runs its Triton"
        regions = {region for s in sampler.samples for region in s.shm_regions}
        # Without this, a look under the wrong name would pass the leak check below by finding nothing.
        regions_while_serving = regions & shm_regions()
        drain_code = serve.stop()
    time.sleep(1)
    left_regions = sorted(regions & shm_regions())
    shm_after_stop = shm_regions()

    timeline = json.loads(timeline_file.read_text())
    windows = latency_windows(timeline, args.window_s, args.hold_s)
    # Seconds since Locust started the load (its process starts several seconds earlier).
    shifted = [replace(s, time_s=s.time_s - timeline["started"]) for s in sampler.samples]
    hold_samples = [s for s in shifted if 0 <= s.time_s <= args.hold_s]
    trend = rss_trend(hold_samples, args.window_s, args.hold_s)
    requests = sum(v["requests"] for v in timeline["seconds"].values())
    failures = sum(v["failures"] for v in timeline["seconds"].values())
    first_p99, last_p99 = windows[0]["p99_ms"], windows[-1]["p99_ms"]
    baseline_fds = baseline.triton_fds + baseline.stubs_fds
    fds_after = after_load.triton_fds + after_load.stubs_fds
    checks = {
        "no failures": failures == 0 and requests > 0,
        f"RSS growth <= {MAX_RSS_GROWTH:.0%} after the first window": trend.growth <= MAX_RSS_GROWTH,
        "open files back to baseline after the load": fds_after <= baseline_fds,
        "the stubs' shm regions found while serving": bool(regions_while_serving),
        "no stub shm region left after stop": not left_regions,
        f"last-window p99 <= {MAX_P99_RATIO}x first-window p99": last_p99 <= MAX_P99_RATIO * first_p99,
        "drained and exited 0 on SIGTERM": drain_code == 0,
    }
    report = {
        "repository": str(args.repository),
        "capacity": capacity,
        "hold": {
            "users": users,
            "duration_s": args.hold_s,
            "window_s": args.window_s,
            "requests": requests,
            "failures": failures,
            "requests_per_s": requests / args.hold_s,
            "locust_exit_code": locust_code,
            "errors": timeline.get("errors", {}),
        },
        "rss": {**asdict(trend), "samples": len(hold_samples), "interval_s": args.sample_interval_s},
        "latency": {
            "first_window_p99_ms": first_p99,
            "last_window_p99_ms": last_p99,
            "ratio": last_p99 / first_p99 if first_p99 else None,
            "windows": windows,
        },
        "fds": {
            "baseline": baseline_fds,
            "after_load": fds_after,
            "serve_rss_mb_after_load": after_load.serve_rss / MB,
        },
        "shm": {
            "stub_regions": sorted(regions),
            "found_while_serving": len(regions_while_serving),
            "left_after_stop": left_regions,
            "machine_before_start": len(shm_before_start),
            "machine_after_stop": len(shm_after_stop),
        },
        "checks": checks,
        "samples": [asdict(s) | {"shm_regions": len(s.shm_regions)} for s in hold_samples],
    }
    (args.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    fine = latency_windows(timeline, max(5.0, args.window_s / 6), args.hold_s)
    plot(args.out / "soak.png", hold_samples, fine, f"soak: {users} users for {args.hold_s:.0f} s")
    return report


def summary(report: dict[str, Any]) -> str:
    hold, rss, latency = report["hold"], report["rss"], report["latency"]
    lines = [
        f"hold: {hold['users']} users x {hold['duration_s']:.0f} s: {hold['requests']} requests "
        f"({hold['requests_per_s']:.1f}/s), {hold['failures']} failures",
        f"RSS Triton+stubs: {rss['reference_mb']:.1f} -> {rss['last_mb']:.1f} MB ({rss['growth']:+.1%}), "
        f"max {rss['max_mb']:.1f} MB, trend {rss['slope_mb_per_min']:+.2f} MB/min "
        f"({rss['trend_over_hold']:+.1%} over the hold), {rss['samples']} samples",
        f"p99 first window {latency['first_window_p99_ms']:.0f} ms, "
        f"last {latency['last_window_p99_ms']:.0f} ms",
        f"open files {report['fds']['baseline']} -> {report['fds']['after_load']}; "
        f"stub shm regions left after stop: {len(report['shm']['left_after_stop'])}",
    ]
    lines += [f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in report["checks"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    report = run(args)
    print(summary(report))
    print(f"written: {args.out / 'soak.json'}, {args.out / 'soak.png'}")
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
