"""A Locust plugin that keeps every request's response time by the second of the run, so a long run's
latency can be compared minute by minute (Locust's own history keeps only a sliding window).

    locust -f loadtest/locustfile.py,loadtest/timeline.py --timeline-file results/timeline.json ...

The file holds, per second since the test started: requests, failures, and a histogram of response times
in milliseconds (Locust's rounding), merged across workers by the master in distributed runs.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from locust import events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

_REPOSITORY_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, _REPOSITORY_ROOT)

from loadtest.options import parsed_options  # noqa: E402

_started = time.time()
_seconds: dict[int, dict[str, Any]] = defaultdict(lambda: {"requests": 0, "failures": 0, "times": Counter()})
_errors: Counter[str] = Counter()


def _add_arguments(parser: LocustArgumentParser) -> None:
    parser.add_argument("--timeline-file", default="", help="Write per-second response times here (JSON)")


def _reset(environment: Environment, **_kwargs: object) -> None:
    global _started
    _started = time.time()
    _seconds.clear()
    _errors.clear()


def _record(response_time: float, exception: BaseException | None = None, **_kwargs: object) -> None:
    second = _seconds[int(time.time() - _started)]
    second["requests"] += 1
    second["times"][round(response_time)] += 1
    if exception is not None:
        second["failures"] += 1
        _errors[f"{type(exception).__name__}: {exception}"[:300]] += 1


def _report(client_id: str, data: dict[str, Any]) -> None:
    data["timeline"] = {
        str(int(_started) + s): {
            "requests": v["requests"],
            "failures": v["failures"],
            "times": dict(v["times"]),
        }
        for s, v in _seconds.items()
    }
    data["timeline_errors"] = dict(_errors)
    _seconds.clear()
    _errors.clear()


def _merge(client_id: str, data: dict[str, Any]) -> None:
    for epoch, values in data.get("timeline", {}).items():
        second = _seconds[int(epoch) - int(_started)]
        second["requests"] += values["requests"]
        second["failures"] += values["failures"]
        second["times"].update({int(ms): n for ms, n in values["times"].items()})
    _errors.update(data.get("timeline_errors", {}))


def _write(environment: Environment, **_kwargs: object) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    path = parsed_options(environment).timeline_file
    if not path:
        return
    report = {
        "started": _started,
        "seconds": {
            str(s): {"requests": v["requests"], "failures": v["failures"], "times": dict(v["times"])}
            for s, v in sorted(_seconds.items())
        },
        "errors": dict(_errors.most_common(20)),
        "distributed": isinstance(environment.runner, MasterRunner),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report) + "\n")


events.init_command_line_parser.add_listener(_add_arguments)
events.test_start.add_listener(_reset)
events.request.add_listener(_record)
events.report_to_master.add_listener(_report)
events.worker_report.add_listener(_merge)
events.test_stopping.add_listener(_write)
events.quitting.add_listener(_write)
