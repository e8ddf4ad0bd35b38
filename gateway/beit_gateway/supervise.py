"""python -m beit_gateway.supervise "COMMAND" "COMMAND" ...: run several servers as one (what `make serve`
does with beit-serve and beit-gateway).

Ctrl-C (SIGINT) or SIGTERM stops every command once, with SIGTERM, and waits for each to finish its shutdown
(Triton drains in-flight requests, uvicorn finishes open ones). The commands run in process groups of their
own, so a terminal's Ctrl-C reaches them only through this supervisor: once, not twice (a second signal makes
uvicorn abandon requests in flight). When one command exits by itself, the others are stopped the same way and
the supervisor exits with that command's code (1 if it was 0: a server stopping alone is a failure).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import subprocess
import threading
from collections.abc import Sequence
from types import FrameType

logger = logging.getLogger("beit_gateway.supervise")

STOP_TIMEOUT_S = 60.0
"""How long a command may take to stop after SIGTERM before it is killed."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m beit_gateway.supervise", description=__doc__)
    parser.add_argument("commands", nargs="+", help="one shell-quoted command line per server")
    return parser.parse_args(argv)


def stop_all(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float = STOP_TIMEOUT_S) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.error("%s did not stop in %.0f s: killing it", process.args, timeout_s)
            process.kill()
            process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("%s received: stopping every server", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    commands = [shlex.split(command) for command in args.commands]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            processes.append(subprocess.Popen(command, process_group=0))
        while not stop_requested.wait(0.2):
            for command, process in zip(commands, processes, strict=True):
                if process.poll() is not None:
                    logger.error(
                        "%s exited with code %s: stopping the others", command[0], process.returncode
                    )
                    return process.returncode or 1
        return 0
    finally:
        stop_all(processes)


if __name__ == "__main__":
    raise SystemExit(main())
