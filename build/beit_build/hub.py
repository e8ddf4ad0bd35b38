"""Where a checkpoint's files come from: a local folder, the Hugging Face Hub, or the Hub's local cache when
the Hub is out of reach.

Loading a hub id offline would otherwise spend half a minute in huggingface_hub's retries, then fail with an
error about connections. One quick request to the Hub decides instead: answered, the id is loaded as usual;
not answered, the cached copy is loaded if there is one, and otherwise the build stops at once with a line
naming the offline options.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from huggingface_hub import constants, get_session, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from beit_build.errors import CheckpointNotFoundError, HubUnreachableError

__all__ = ["HUB_PROBE_TIMEOUT", "OFFLINE_OPTIONS", "hub_problem", "locate_checkpoint"]

logger = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT = 5.0
"""Seconds the Hub has to answer one HEAD request before it counts as out of reach."""
OFFLINE_OPTIONS = (
    "offline, build random weights instead (make serve RANDOM=tiny, or beit-build --random tiny) "
    "or a local checkpoint folder (make serve MODEL=/path/to/checkpoint, or beit-build --model PATH)"
)
# A hub id is NAME or OWNER/NAME; anything else (./folder, /abs/path) is a path, to a folder or nothing.
_HUB_ID = re.compile(r"\w[\w.-]*(/\w[\w.-]*)?")


def hub_problem() -> str | None:
    """Why the Hub cannot be used now, or None when it answers."""
    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT)
    # Any failure to get an answer at all: huggingface_hub's HTTP library (and its errors) changes between
    # its releases. An HTTP error status is still an answer.
    except Exception as e:
        return f"the Hugging Face Hub at {constants.ENDPOINT} does not answer ({e or type(e).__name__})"
    return None


def locate_checkpoint(source: str | Path) -> str | Path:
    """`source` itself when it is a folder, or a hub id the Hub answers for; the cached copy of the hub id
    when the Hub is out of reach. HubUnreachableError, at once, when it is out of reach and nothing is
    cached; CheckpointNotFoundError for a path that is no folder."""
    if Path(source).is_dir():
        return source
    if not _HUB_ID.fullmatch(str(source)):
        raise CheckpointNotFoundError(f"{source} is neither a checkpoint folder nor a hub id (OWNER/NAME)")
    problem = hub_problem()
    if problem is None:
        return source
    try:
        cached = snapshot_download(str(source), local_files_only=True)
    except LocalEntryNotFoundError:
        raise HubUnreachableError(f"cannot download {source}: {problem}; {OFFLINE_OPTIONS}") from None
    logger.info("%s: loading %s from the local cache %s", problem, source, cached)
    return Path(str(cached))
