"""Wall-clock timing shared by the benchmark scripts (run as ``python benchmarks/<script>.py``, so this folder is
on ``sys.path``)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls: robust to the odd slow call on a shared machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
