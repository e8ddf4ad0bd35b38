"""A load shape that adds users step by step until the p95 latency SLO breaks, and reports the capacity.

    locust -f loadtest/locustfile.py,loadtest/shape.py --headless --host http://HOST:8000 \\
        --slo-p95-ms 500 --step-users 2 --step-duration-s 60 --csv results/run --html results/run.html

Each step holds a fixed number of users. Its first `--step-warmup-s` seconds (spawning, queues filling)
are left out; the rest is the step's measurement window. The capacity is the highest step whose window
kept p95 within the SLO and the failure ratio within `--max-failure-ratio`: its users and req/s are what
one deployment sustains. The search stops at the first step that breaks either, or at `--max-users`.

In distributed runs the shape runs on the master, on the statistics the workers report every few
seconds, so a window's edges are as sharp as those reports (WORKER_REPORT_INTERVAL, 3 s).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from locust import LoadTestShape, events
from locust.argument_parser import LocustArgumentParser
from locust.runners import Runner

# Loaded by locust as a plain file (see locustfile.py): the package import needs the repository root.
_REPOSITORY_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, _REPOSITORY_ROOT)

from loadtest.capacity import Snapshot, StepResult, capacity_line, find_capacity, measure_window  # noqa: E402
from loadtest.options import parsed_options  # noqa: E402

logger = logging.getLogger(__name__)


def _add_arguments(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("capacity", "Step users up until the p95 latency SLO breaks")
    group.add_argument("--slo-p95-ms", type=float, default=500.0, help="p95 latency objective (ms)")
    group.add_argument("--max-failure-ratio", type=float, default=0.01, help="Failed / all requests allowed")
    group.add_argument(
        "--start-users", type=int, default=0, help="Users in the first step (default: --step-users)"
    )
    group.add_argument("--step-users", type=int, default=2, help="Users added per step")
    group.add_argument("--step-duration-s", type=float, default=60.0, help="Length of one step")
    group.add_argument("--step-warmup-s", type=float, default=10.0, help="Start of each step left out")
    group.add_argument("--max-users", type=int, default=256, help="Stop here even if the SLO still holds")
    group.add_argument(
        "--capacity-file",
        default="",
        help="Where the steps and the capacity are written as JSON (default: CSV_PREFIX_capacity.json "
        "with --csv, else capacity.json)",
    )


events.init_command_line_parser.add_listener(_add_arguments)


class CapacityShape(LoadTestShape):
    def __init__(self) -> None:
        super().__init__()
        self.steps: list[StepResult] = []
        self._users = 0
        self._step_started = 0.0
        self._window_start: Snapshot | None = None
        self._finished = False

    def reset_time(self) -> None:
        super().reset_time()
        self.steps = []
        self._users = 0
        self._window_start = None
        self._finished = False

    def tick(self) -> tuple[int, float] | None:
        options = parsed_options(self._runner().environment)
        now = self.get_run_time()
        if self._finished:
            return None
        if self._users == 0:
            self._start_step(options.start_users or options.step_users, now)
        elapsed = now - self._step_started
        if self._window_start is None and elapsed >= options.step_warmup_s:
            self._window_start = self._snapshot(now)
        if elapsed >= options.step_duration_s and self._window_start is not None:
            step = measure_window(self._users, self._window_start, self._snapshot(now))
            self.steps.append(step)
            holds = step.holds(options.slo_p95_ms, options.max_failure_ratio)
            logger.info(
                "step %d users: %.2f req/s, p50 %.0f ms, p95 %.0f ms, p99 %.0f ms, %d/%d failed: %s",
                step.users,
                step.requests_per_s,
                step.p50_ms,
                step.p95_ms,
                step.p99_ms,
                step.failures,
                step.requests,
                "holds" if holds else "SLO BROKEN",
            )
            self._write_report(options)
            if not holds or self._users + options.step_users > options.max_users:
                self._finished = True
                print(capacity_line(self.steps, options.slo_p95_ms, options.max_failure_ratio), flush=True)
                return None
            self._start_step(self._users + options.step_users, now)
        # Spawn a step's new users within about a second, well inside the warm-up.
        return self._users, float(max(options.step_users, self._users))

    def _start_step(self, users: int, now: float) -> None:
        self._users = users
        self._step_started = now
        self._window_start = None

    def _snapshot(self, now: float) -> Snapshot:
        total = self._runner().stats.total
        return Snapshot(now, total.num_requests, total.num_failures, dict(total.response_times))

    def _runner(self) -> Runner:
        assert self.runner is not None, "Locust sets the runner before the shape ticks"
        return self.runner

    def _write_report(self, options: argparse.Namespace) -> None:
        path = Path(
            options.capacity_file
            or (f"{options.csv_prefix}_capacity.json" if options.csv_prefix else "capacity.json")
        )
        capacity = find_capacity(self.steps, options.slo_p95_ms, options.max_failure_ratio)
        report = {
            "slo_p95_ms": options.slo_p95_ms,
            "max_failure_ratio": options.max_failure_ratio,
            "capacity": asdict(capacity) if capacity else None,
            "summary": capacity_line(self.steps, options.slo_p95_ms, options.max_failure_ratio),
            "steps": [asdict(step) for step in self.steps],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
