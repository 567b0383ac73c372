"""JSON log lines on stderr. Callers pass safe fields only: token hashes, never tokens."""

from __future__ import annotations

import json
import logging
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
        return json.dumps(line, default=str)


#: loggers of the libraries that serve the requests: their lines are JSON too, so that a log
#: pipeline reads every line of the process; they speak only from WARNING up
LIBRARY_LOGGERS = ("uvicorn", "asyncio")


def configure(level: str = "info") -> None:
    """Every line on stderr as JSON: ours at ``level``, the server's and the event loop's from
    WARNING up (uvicorn is told not to install handlers of its own: ``log_config=None``).
    A failure logs its exception's type, never a traceback: it could quote a header."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    ours = logging.getLevelName(level.upper())
    thresholds = {"enforcer": ours, **{library: max(ours, logging.WARNING) for library in LIBRARY_LOGGERS}}
    for name, threshold in thresholds.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(threshold)
        logger.propagate = False
