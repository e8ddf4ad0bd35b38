"""beit-build without the Hugging Face Hub: a hub id fails at once naming the offline options, unless the
Hub's cache holds it. The Hub is simulated out of reach: an endpoint nothing listens on, or HF_HUB_OFFLINE."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from beit_build.checkpoint import load_checkpoint
from beit_build.errors import HubUnreachableError
from tests.conftest import free_port

OFFLINE_OPTION = "make serve RANDOM=tiny"


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The Hub's endpoint where nothing listens, and an empty cache."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    return endpoint


def test_a_hub_id_fails_within_a_second_naming_the_offline_option(unreachable_hub: str) -> None:
    start = time.monotonic()
    with pytest.raises(HubUnreachableError) as raised:
        load_checkpoint("microsoft/beit-base-patch16-224-pt22k-ft22k")
    # huggingface_hub alone retried for 28 s (1 + 2 + 4 + 8 + 8 s of backoff) before failing.
    assert time.monotonic() - start < 1.0
    message = str(raised.value)
    assert "microsoft/beit-base-patch16-224-pt22k-ft22k" in message and unreachable_hub in message
    assert OFFLINE_OPTION in message and "\n" not in message


def test_hf_hub_offline_fails_a_hub_id_without_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", "http://the-hub-must-not-be-asked.invalid")
    with pytest.raises(HubUnreachableError, match="HF_HUB_OFFLINE is set.*RANDOM=tiny"):
        load_checkpoint("owner/not-cached-anywhere")


def test_a_cached_checkpoint_loads_from_the_cache_when_the_hub_does_not_answer(
    unreachable_hub: str, tiny_checkpoint: Path
) -> None:
    # The Hub cache's layout: refs/main names the snapshot folder that holds the files.
    cached = Path(constants.HF_HUB_CACHE) / "models--owner--tiny-beit"
    (cached / "refs").mkdir(parents=True)
    (cached / "refs" / "main").write_text("0123abcd")
    shutil.copytree(tiny_checkpoint, cached / "snapshots" / "0123abcd")
    checkpoint = load_checkpoint("owner/tiny-beit")
    assert checkpoint.name == "owner/tiny-beit" and checkpoint.num_labels == 10


def test_the_cli_says_it_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "HF_HUB_CACHE": str(tmp_path / "hub-cache"),
    }
    beit_build = Path(sys.executable).parent / "beit-build"
    result = subprocess.run(
        [beit_build, "--model", "owner/some-beit", "--repository", tmp_path / "repository"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Retrying" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("beit-build: error: cannot download owner/some-beit")
    assert OFFLINE_OPTION in errors[0]
    assert not (tmp_path / "repository").exists()
