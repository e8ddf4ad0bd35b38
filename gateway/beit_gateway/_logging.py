"""Structured logs: one JSON object per line on stderr, for the gateway's own records and uvicorn's.

    {"time": "2025-01-01T12:00:00.123Z", "level": "info", "logger": "beit_gateway", "message": "request",
     "request_id": "5f0c...", "method": "POST", "path": "/score", "status": 200, "duration_ms": 171.2,
     "images": 2}

Fields beyond time, level, logger and message come from `extra={"fields": {...}}`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

__all__ = ["JsonFormatter", "uvicorn_log_config"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """logging.config.dictConfig for uvicorn.run: every logger through `JsonFormatter`. uvicorn's access log
    is off; the gateway logs each request itself, with its request id, images and error code."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }
