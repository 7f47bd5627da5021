"""A timing context around each step; the seconds go into its manifest and the run summary."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("pss")


class Timer:
    """Elapsed wall seconds, readable inside and after the block."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.end: float | None = None

    @property
    def seconds(self) -> float:
        return round((self.end or time.perf_counter()) - self.start, 3)


@contextmanager
def timed(label: str) -> Iterator[Timer]:
    """Log the start and the duration of a block."""
    timer = Timer()
    log.debug("%s: started", label)
    try:
        yield timer
    finally:
        timer.end = time.perf_counter()
        log.info("%s: %.2fs", label, timer.seconds)
