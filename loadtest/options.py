"""Locust's parsed command line, for the locustfile and the load shape."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from locust.env import Environment


def parsed_options(environment: Environment) -> argparse.Namespace:
    """The command line's options, ours included; Locust parses them before any user or shape runs."""
    options: argparse.Namespace | None = environment.parsed_options
    assert options is not None, "Locust has not parsed its command line"
    return options
