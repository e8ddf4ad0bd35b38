"""beit_serve.processes on processes this test starts: stat fields past a command name with spaces and
parentheses, zombies, children, and CPU time per process and per process group."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beit_serve.processes import alive, argv, children, cpu_seconds, group_cpu_seconds, stat_fields

SPIN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(60)"


@pytest.fixture
def spinner(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own process group that burns 0.3 s of CPU, then sleeps; its executable's name holds a
    space and a parenthesis, as a command name in /proc/PID/stat may."""
    odd_name = tmp_path / "py (odd) name"
    odd_name.symlink_to(sys.executable)
    process = subprocess.Popen([str(odd_name), "-c", SPIN], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def test_stat_fields_start_after_the_command_name_whatever_it_holds(spinner: subprocess.Popen[bytes]) -> None:
    fields = stat_fields(spinner.pid)
    assert fields[0] in "RS" and int(fields[1]) == os.getpid() and int(fields[2]) == spinner.pid
    assert argv(spinner.pid)[1:3] == ["-c", SPIN]


def test_children_cpu_time_and_the_group_s_cpu_time(spinner: subprocess.Popen[bytes]) -> None:
    assert spinner.pid in children(os.getpid())
    deadline = time.monotonic() + 30
    while cpu_seconds(spinner.pid) < 0.25 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 0.25 <= cpu_seconds(spinner.pid) <= group_cpu_seconds(spinner.pid) < 5
    assert group_cpu_seconds(2**22 + 1) == 0  # past the kernel's pid_max: no such group


def test_a_zombie_or_a_vanished_process_is_not_alive(spinner: subprocess.Popen[bytes]) -> None:
    assert alive(spinner.pid)
    spinner.kill()
    deadline = time.monotonic() + 30
    while stat_fields(spinner.pid)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(spinner.pid)  # not yet reaped
    spinner.wait()
    assert not alive(spinner.pid)
