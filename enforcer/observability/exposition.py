"""The ``/metrics`` answer, for one process or for several sharing a directory.

prometheus_client picks where values live once, when it is first imported: in the
process's memory, or (with ``PROMETHEUS_MULTIPROC_DIR`` set) in memory-mapped files, one
set per process, in that directory. In the second case a registry only sees the values of
the process that holds it, so each scrape builds a fresh registry over a
``MultiProcessCollector``, which reads every process's files: counters and histograms
add up over all workers, living or dead; gauges follow their ``multiprocess_mode``.
The directory is made ready (created, emptied of earlier runs' files) before this module
is first imported: see ``observability.metricsdir``.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from enforcer.observability.metricsdir import MULTIPROC_ENV


def multiprocess_dir() -> str | None:
    """The directory this process writes its metric values to, or None when they stay in memory.

    What counts is the choice prometheus_client made at import, not the environment now:
    a variable set afterwards changes nothing for this process."""
    if not values.ValueClass._multiprocess:
        return None
    return os.environ.get(MULTIPROC_ENV)


def exposition(registry: CollectorRegistry) -> bytes:
    """The text format for ``registry``'s metrics, merged over every process when values live in files."""
    directory = multiprocess_dir()
    return generate_latest(registry) if directory is None else merged_exposition(directory)


def merged_exposition(directory: str | Path) -> bytes:
    """Every process's values in ``directory``, merged (a fresh registry per call: nothing is cached)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry)


def forget_process(pid: int, directory: str | Path) -> None:
    """After a worker exited: its ``live*`` gauges stop counting; its counters stay in the sums."""
    mark_process_dead(pid, str(directory))
