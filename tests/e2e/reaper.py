"""The processes the tests and the benchmark start, stopped at interpreter
exit at the latest, however the run ends."""

from __future__ import annotations

import atexit
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Reaper(set, Generic[T]):
    """The instances still live (strong references: one nobody holds any
    more must still be stopped).  ``stop_all()`` runs ``stop`` on each,
    ignoring errors; it runs at interpreter exit too."""

    def __init__(self, stop: Callable[[T], None]) -> None:
        super().__init__()
        self._stop = stop
        atexit.register(self.stop_all)

    def stop_all(self) -> None:
        for item in list(self):
            try:
                self._stop(item)
            except Exception:
                pass
