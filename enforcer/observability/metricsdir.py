"""The directory where metric values live in files (``PROMETHEUS_MULTIPROC_DIR``).

prometheus_client decides once, when it is first imported, whether values live in memory or
in that directory, and it then opens one ``*.db`` file per metric type and process id. The
files outlive the process. A restarted process would therefore add the previous run's values
to its own counters: merged from files named after the old process id, or, in a container
where the enforcer is always pid 1, simply by reopening the same files. So every
``enforcer serve`` empties the directory of value files before anything imports
prometheus_client, and this module must never import it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def clear_directory(directory: str | Path) -> None:
    """Remove the value files of earlier runs: their processes are gone, and their counters
    would otherwise be added to this run's."""
    for path in Path(directory).glob("*.db"):
        path.unlink(missing_ok=True)


def prepare_configured_directory() -> Path | None:
    """The operator's ``PROMETHEUS_MULTIPROC_DIR``, created if missing and cleared of earlier
    runs' value files; None when it is not set.

    Call it before prometheus_client is imported. An empty value is removed from the
    environment: prometheus_client would take it as "files, in the current directory"."""
    given = os.environ.get(MULTIPROC_ENV)
    if given is None:
        return None
    if not given:
        del os.environ[MULTIPROC_ENV]
        return None
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    clear_directory(path)
    return path


@contextlib.contextmanager
def metrics_directory() -> Iterator[Path]:
    """Where several processes write their metric values: the operator's directory (prepared as
    above) or else a private temporary one, set in the environment for the processes started
    inside the block and removed at its end."""
    given = prepare_configured_directory()
    if given is not None:
        yield given
        return
    private = tempfile.mkdtemp(prefix="enforcer-metrics-")
    os.environ[MULTIPROC_ENV] = private
    try:
        yield Path(private)
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(private, ignore_errors=True)
