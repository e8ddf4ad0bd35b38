"""Keeps Triton serving: recovers a model whose Python-backend stub died, restarts Triton if it exits, and
drains on shutdown.

Triton 2.51 never restarts a stub that was killed (the OOM killer, a segfault in a decoder): every later
request to its model fails with `Stub process '<instance>' is not healthy` while the server and the model
keep reporting ready (stub auto-restart was dropped in 24.06, server#7347; readiness that reflects stub
health came to the Python backend in 25.12, python_backend#423). The supervisor watches the stub processes
themselves (Triton's children, `EmbeddedServer.stubs`), every `poll_interval` seconds. When one is gone it
tells the front door to refuse with a retryable 503 / UNAVAILABLE and to report not-ready, unloads the stub's
model and loads it again through Triton's model-control API (explicit mode: a plain load of an unchanged
model is a no-op), and serves again once Triton is ready. If that fails, or Triton itself exits, Triton is
restarted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from beit_serve.front_door import ServingState
from beit_serve.processes import Stub, alive
from beit_serve.server import EmbeddedServer, ServerStartError

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.2
MAX_RESTARTS = 5
"""Triton restarts allowed within RESTART_WINDOW seconds before beit-serve gives up and exits non-zero (a
container then restarts)."""
RESTART_WINDOW = 600.0
AFTERMATH = 5.0
"""Seconds after a recovery during which a 500 from Triton is still put down to the dead stub: the requests
that were queued for its instance fail only when the reloaded model replaces it (measured here: at the end
of the reload, 2 s after the kill)."""


@dataclass
class Recovery:
    """One recovery, for the log and for tests: what died, what was done, how long serving was refused."""

    reason: str
    models: tuple[str, ...]
    action: str
    seconds: float


@dataclass
class Supervisor:
    server: EmbeddedServer
    state: ServingState
    admin_headers: Mapping[str, str]
    """Headers that open Triton's model-repository API (its restriction), for reloading a model."""
    ready_timeout: float = 300.0
    drain_timeout: float = 10.0
    poll_interval: float = POLL_INTERVAL
    recoveries: list[Recovery] = field(default_factory=list)
    on_recovery: Callable[[Recovery], None] | None = None
    _stubs: list[Stub] = field(default_factory=list)
    _restarts: list[float] = field(default_factory=list)
    _recovered_at: float = float("-inf")

    def __post_init__(self) -> None:
        self.state.stub_died = self.stub_died

    def stub_died(self) -> bool:
        """A stub is dead now, or was until moments ago: Triton's 500s then come from it."""
        if time.monotonic() - self._recovered_at < AFTERMATH:
            return True
        return any(not alive(stub.pid) for stub in self._stubs)

    def run(self, stop: threading.Event) -> int:
        """Serves until `stop` is set, then drains; the exit code for beit-serve."""
        try:
            self._start()
        except ServerStartError as error:
            logger.error("%s", error)
            self.server.stop()
            return 1
        try:
            while not stop.wait(self.poll_interval):
                if self.server.returncode is not None:
                    if not self._restart(f"Triton exited with code {self.server.returncode}", ()):
                        return 1
                    continue
                dead = [stub for stub in self._stubs if not alive(stub.pid)]
                if dead:
                    self._recover(dead)
            self.drain()
            return 0
        finally:
            self.server.stop()

    def _start(self) -> None:
        self.state.refuse("the server is starting")
        self.server.start()
        self.server.wait_until_ready(self.ready_timeout)
        self._serve()

    def _serve(self, retired: frozenset[int] | set[int] = frozenset()) -> None:
        self._stubs = [stub for stub in self.server.stubs() if stub.pid not in retired]
        self.state.serve()
        logger.info("serving; Python-backend stubs: %s", ", ".join(s.instance for s in self._stubs) or "none")

    def _recover(self, dead: list[Stub]) -> None:
        models = tuple(sorted({stub.model for stub in dead}))
        reason = f"the backend process of {', '.join(s.instance for s in dead)} died"
        self.state.refuse(f"{reason}; reloading {', '.join(models)}")
        logger.error("%s: reloading %s", reason, ", ".join(models))
        started = time.monotonic()
        try:
            for model in models:
                self.server.unload_model(model, self.admin_headers)
                self.server.load_model(model, self.admin_headers)
            self._wait_ready(started)
        except (RuntimeError, OSError) as error:
            logger.error("reloading %s failed (%s): restarting Triton", ", ".join(models), error)
            self._restart(reason, models, started)
            return
        self._done(Recovery(reason, models, "reloaded", time.monotonic() - started))
        # Triton unloads asynchronously: the models' other stubs from before the reload may still be exiting,
        # and their exit is not a new death.
        self._serve(retired={stub.pid for stub in self._stubs if stub.model in models})

    def _wait_ready(self, started: float) -> None:
        while not self.server.is_ready():
            if time.monotonic() - started > self.ready_timeout:
                raise RuntimeError(f"Triton was not ready {self.ready_timeout:.0f} s after the reload")
            time.sleep(0.05)

    def _restart(self, reason: str, models: tuple[str, ...], started: float | None = None) -> bool:
        started = time.monotonic() if started is None else started
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW] + [now]
        if len(self._restarts) > MAX_RESTARTS:
            logger.error(
                "%s, and Triton was restarted %d times in %.0f s: giving up",
                reason,
                MAX_RESTARTS,
                RESTART_WINDOW,
            )
            return False
        self.state.refuse(f"{reason}; restarting Triton")
        logger.error("%s: restarting Triton", reason)
        self.server.stop()
        try:
            self._start()
        except ServerStartError as error:
            logger.error("%s", error)
            return False
        self._done(Recovery(reason, models, "restarted", time.monotonic() - started))
        return True

    def _done(self, recovery: Recovery) -> None:
        self._recovered_at = time.monotonic()
        self.recoveries.append(recovery)
        logger.warning(
            "serving again %.2f s after: %s (%s)", recovery.seconds, recovery.reason, recovery.action
        )
        if self.on_recovery is not None:
            self.on_recovery(recovery)

    def drain(self) -> None:
        """New requests are refused (retryable 503 / UNAVAILABLE), those in flight are answered, then Triton
        stops."""
        self.state.refuse("the server is shutting down")
        in_flight = self.state.in_flight
        if self.state.wait_idle(self.drain_timeout):
            logger.info("drained: %d request(s) in flight answered", in_flight)
        else:
            logger.warning(
                "%d request(s) still in flight after %.0f s: stopping anyway",
                self.state.in_flight,
                self.drain_timeout,
            )
        self.server.stop()
