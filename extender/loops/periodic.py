"""The one way a loop of this package runs: a daemon thread calling ``run_once`` every
``interval`` seconds until stopped.

A cycle that raises is logged and the loop goes on: a bad object or an API error must not
end the re-creation of stranded pods, the node labels or the catalog's status for the life
of the process. Each loop decides inside ``run_once`` whether it may act (the Lease).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class Periodic:
    """Subclasses set :attr:`thread_name` and :attr:`interval` and implement ``run_once``;
    ``__init__`` must call :meth:`_init_loop`."""

    thread_name = "loop"
    interval: float

    def _init_loop(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> Any:
        raise NotImplementedError

    def first_delay(self) -> float:
        """Seconds before the first cycle (0: at once)."""
        return 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        if self._stopping.wait(self.first_delay()):
            return
        while not self._stopping.is_set():
            try:
                self.run_once()
            except Exception:  # the loop must outlive any one bad cycle
                log.exception("%s cycle failed", self.thread_name)
            self._stopping.wait(self.interval)
