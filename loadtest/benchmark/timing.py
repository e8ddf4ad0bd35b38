"""Closed-loop timing: N workers each issue calls back to back for a fixed window; latency is measured
per call with perf_counter, throughput is what completed inside the window."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# A call returns how many images it handled (a batch counts as its size).
Call = Callable[[], int]
# Builds one worker's call inside that worker's thread, so per-thread clients and sessions stay private.
CallFactory = Callable[[int], Call]


@dataclass(frozen=True)
class Measurement:
    concurrency: int
    batch_size: int
    duration_s: float
    calls: int
    images: int
    failures: int
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    first_error: str | None = None
    # CPU seconds the measured side used during the window, where a CPU clock was given: the server's
    # processes (read from /proc, so a load generator on the same machine is not charged), or this process
    # for an in-process baseline.
    cpu_s: float | None = None


def closed_loop(
    factory: CallFactory,
    *,
    concurrency: int = 1,
    duration_s: float,
    warmup_s: float,
    batch_size: int = 1,
    cpu_clock: Callable[[], float] | None = None,
) -> Measurement:
    """Runs `concurrency` workers back to back and measures a `duration_s` window that opens once
    `warmup_s` has passed and every worker has finished a first call (lazy init, first batches and
    connection setup stay out). Throughput counts the calls that finish inside the window, wherever
    they started: in a steady state the calls cut by the window's two edges balance out, whereas
    counting only calls that fit inside would drop up to one call per worker at each edge, a large
    share when a call takes seconds."""
    records: list[list[tuple[float, float, int, bool]]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()
    started_workers = [0]
    all_started = threading.Event()
    # The clock starts once every worker has set up (clients, sessions), for all of them at once.
    ready = threading.Barrier(concurrency + 1)

    def worker(index: int) -> None:
        try:
            call = factory(index)
        except BaseException as error:
            errors.append(f"{type(error).__name__}: {error}")
            ready.abort()
            raise
        ready.wait()
        while not stop.is_set():
            started = time.perf_counter()
            try:
                handled, failed = call(), False
            except Exception as error:
                handled, failed = 0, True
                if not errors:
                    errors.append(f"{type(error).__name__}: {error}")
            finished = time.perf_counter()
            records[index].append((finished, finished - started, handled, failed))
            if len(records[index]) == 1:
                with lock:
                    started_workers[0] += 1
                    if started_workers[0] == concurrency:
                        all_started.set()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        raise RuntimeError(f"a worker failed to set up: {errors[0] if errors else 'unknown error'}") from None
    time.sleep(warmup_s)
    all_started.wait()
    cpu_start = cpu_clock() if cpu_clock else None
    window_start = time.perf_counter()
    time.sleep(duration_s)
    window_end = time.perf_counter()
    cpu_end = cpu_clock() if cpu_clock else None
    stop.set()
    for thread in threads:
        thread.join()

    inside = [r for worker_records in records for r in worker_records if window_start <= r[0] <= window_end]
    return summarize(
        [latency for _, latency, _, failed in inside if not failed],
        images=sum(handled for _, _, handled, _ in inside),
        failures=sum(failed for *_, failed in inside),
        duration_s=window_end - window_start,
        concurrency=concurrency,
        batch_size=batch_size,
        first_error=errors[0] if errors else None,
        cpu_s=None if cpu_start is None or cpu_end is None else cpu_end - cpu_start,
    )


def summarize(
    latencies_s: list[float],
    *,
    images: int,
    failures: int,
    duration_s: float,
    concurrency: int,
    batch_size: int,
    first_error: str | None = None,
    cpu_s: float | None = None,
) -> Measurement:
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99]) if ms.size else (float("nan"),) * 3
    return Measurement(
        concurrency=concurrency,
        batch_size=batch_size,
        duration_s=duration_s,
        calls=int(ms.size),
        images=images,
        failures=failures,
        images_per_s=images / duration_s,
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=float(ms.mean()) if ms.size else float("nan"),
        first_error=first_error,
        cpu_s=cpu_s,
    )
