"""What a running beit-serve is made of, read from Linux /proc: its Triton and the stubs' memory, open files
and shared-memory regions (the processes themselves: `beit_serve.processes`). Shared by the soak, fault and
fuzz runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from beit_serve.processes import argv, children, stat_fields, stubs_of

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def triton_of(serve_pid: int) -> int | None:
    """The tritonserver that a beit-serve process runs, or None while there is none."""
    for child in children(serve_pid):
        try:
            if Path(argv(child)[0]).name == "tritonserver":
                return child
        except OSError:
            continue
    return None


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue
    return total


def minor_page_faults(pid: int) -> int:
    """Page faults the process has served without disk I/O so far (minflt, the 8th field after the name)."""
    return int(stat_fields(pid)[7])


def open_fds(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total


@dataclass(frozen=True)
class Sample:
    """One reading of a beit-serve: Triton plus every stub (what serving costs), and beit-serve itself."""

    time_s: float
    triton_rss: int
    stubs_rss: int
    serve_rss: int
    triton_fds: int
    stubs_fds: int
    stubs: int
    shm_regions: tuple[str, ...]

    @property
    def rss(self) -> int:
        """Triton plus every stub."""
        return self.triton_rss + self.stubs_rss


def sample(serve_pid: int, time_s: float) -> Sample | None:
    triton = triton_of(serve_pid)
    if triton is None:
        return None
    stubs = stubs_of(triton)
    stub_pids = [stub.pid for stub in stubs]
    return Sample(
        time_s=time_s,
        triton_rss=rss_bytes([triton]),
        stubs_rss=rss_bytes(stub_pids),
        serve_rss=rss_bytes([serve_pid]),
        triton_fds=open_fds([triton]),
        stubs_fds=open_fds(stub_pids),
        stubs=len(stubs),
        shm_regions=tuple(sorted(stub.shm_region for stub in stubs)),
    )
