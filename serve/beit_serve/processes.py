"""Triton's processes, read from Linux /proc: a process's stat fields, argv and children, whether it still
runs, the CPU time of a process or a process group, and Triton's Python-backend stubs. The one place this
project parses /proc/PID/stat; beit-serve's supervisor and the load, soak and fault runs all read it here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STUB_EXECUTABLE = "triton_python_backend_stub"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the parenthesized command name (which may hold spaces): state, ppid, pgrp, ...;
    minflt is [7], utime [11], stime [12]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def argv(pid: int) -> list[str]:
    return [part.decode(errors="replace") for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        return stat_fields(pid)[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def cpu_seconds(pid: int) -> float:
    """User plus system time the process has used so far."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def group_cpu_seconds(group: int) -> float:
    """CPU time used so far by the processes now in process group `group`."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _, fields in _every_stat() if int(fields[2]) == group)
    return ticks / _CLOCK_TICKS


def children(pid: int) -> list[int]:
    return sorted(child for child, fields in _every_stat() if int(fields[1]) == pid)


def _every_stat() -> list[tuple[int, list[str]]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((int(entry.name), stat_fields(int(entry.name))))
            except (OSError, IndexError):
                continue  # exited while the listing was read
    return found


@dataclass(frozen=True)
class Stub:
    """A Python-backend stub process: one per instance of a Python-backend model."""

    pid: int
    model: str
    instance: str
    shm_region: str


def stubs_of(triton_pid: int) -> list[Stub]:
    """Triton's Python-backend stubs, by instance name. The backend starts each as Triton's child with argv
    `stub MODEL_PATH SHM_REGION ... INSTANCE ...` (python_backend src/stub_launcher.cc), MODEL_PATH being
    <repository>/<model>/<version>/model.py."""
    found = []
    for child in children(triton_pid):
        try:
            command = argv(child)
        except OSError:
            continue
        if Path(command[0]).name == STUB_EXECUTABLE and len(command) > 8:
            model = Path(command[1]).parent.parent.name
            found.append(Stub(child, model, command[8], command[2].lstrip("/")))
    return sorted(found, key=lambda stub: stub.instance)
