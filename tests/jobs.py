"""Batch jobs of the CLI started the way a terminal starts its foreground job, for the Ctrl-C tests."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path


def start_foreground_job(command: Sequence[str | Path]) -> subprocess.Popen[str]:
    """`command` with SIGINT at its default disposition, its output piped. A test run started in the
    background of a shell without job control inherits SIGINT ignored, and a Python started with it ignored
    installs no KeyboardInterrupt handler: the job would then run on through Ctrl-C."""
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0
