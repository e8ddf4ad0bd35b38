"""When to retry and how long to wait (after anthropic-sdk-python `_base_client.py`)."""

from __future__ import annotations

import random

from ._config import RetryPolicy
from ._constants import RETRY_JITTER
from ._exceptions import BeitClientError, TransientError

__all__ = ["retry_delay", "should_retry"]


def should_retry(error: BeitClientError, retries_done: int, policy: RetryPolicy) -> bool:
    return isinstance(error, TransientError) and retries_done < policy.max_retries


def retry_delay(retries_done: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Seconds before retry number `retries_done + 1`: exponential, capped, minus up to RETRY_JITTER of itself
    so that clients failing together do not retry in lockstep."""
    ceiling = min(policy.initial_delay * 2.0**retries_done, policy.max_delay)
    jitter = 1.0 - RETRY_JITTER * (rng or random).random()
    return ceiling * jitter
