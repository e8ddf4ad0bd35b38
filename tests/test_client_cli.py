"""The beit-client CLI on the in-memory transport."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from beit_client import BeitClient, InferRequest, MockTransport, RetryPolicy
from beit_client.cli import EXIT_INTERRUPTED, classify_to_file, collect_sources, main
from tests.test_client_fakes import (
    LABELS,
    MAX_BATCH_SIZE,
    beit_handler,
    image_bytes,
    label_index,
    model_configs,
)


def client_factory(handler: Any = beit_handler, *, random_weights: bool = True) -> Any:
    def make(args: Any) -> BeitClient:
        transport = MockTransport(handler, model_configs=model_configs(random_weights=random_weights))
        return BeitClient(args.url, transport=transport, retry=RetryPolicy(0))

    return make


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for width in range(1, 7):
        (folder / f"{width}.png").write_bytes(image_bytes(width))
    (folder / "nested" / "7.png").write_bytes(image_bytes(7))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folders_are_walked_recursively_for_images(photos: Path) -> None:
    sources = collect_sources([str(photos), "https://example.com/x.jpg"])
    assert [Path(s).name for s in sources[:-1]] == [f"{w}.png" for w in range(1, 7)] + ["7.png"]
    assert sources[-1] == "https://example.com/x.jpg"


def test_classify_prints_a_table_per_image(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["classify", str(photos / "2.png"), "--top-k", "2"], make_client=client_factory())
    out = capsys.readouterr().out
    assert code == 0
    assert str(photos / "2.png") in out and LABELS[2] in out and "score" in out


def test_classify_json_lines_and_a_bad_image_exit_non_zero(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (photos / "broken.png").write_bytes(b"truncated")
    code = main(["classify", str(photos), "--json", "--top-k", "1"], make_client=client_factory())
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 1
    assert len(lines) == 7 and "broken.png" in captured.err
    assert lines[0]["predictions"][0]["index"] == label_index(1)


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_batch_job_resumes_without_losing_or_repeating_images(photos: Path) -> None:
    output = photos.parent / "results.jsonl"
    sent: list[int] = []

    def flaky(request: InferRequest) -> Any:
        sent.append(request.batch_size)
        if len(sent) == 2:
            raise InferenceServerException("server went away", status="503")
        return beit_handler(request)

    assert (
        main(
            ["classify", str(photos), "--output", str(output), "--no-progress"],
            make_client=client_factory(flaky),
        )
        == 1
    )
    first = read_results(output)
    assert 0 < len(first) < 7
    # A run killed mid-write leaves a partial line behind.
    with output.open("a") as file:
        file.write('{"source": "half-writ')
    assert (
        main(
            ["classify", str(photos), "--output", str(output), "--no-progress"], make_client=client_factory()
        )
        == 0
    )
    results = read_results(output)
    assert sorted(r["source"] for r in results) == sorted(collect_sources([str(photos)]))
    assert results[: len(first)] == first


def test_a_finished_batch_job_sends_nothing_on_rerun(photos: Path) -> None:
    output = photos.parent / "results.jsonl"
    client = BeitClient("http://fake", transport=MockTransport(beit_handler, model_configs=model_configs()))
    report = classify_to_file(client, collect_sources([str(photos)]), output, progress=False)
    assert (report.written, report.skipped, report.failures) == (7, 0, [])
    again = classify_to_file(client, collect_sources([str(photos)]), output, progress=False)
    assert (again.written, again.skipped) == (0, 7)


def test_embed_writes_the_array_and_its_sources_alongside(photos: Path) -> None:
    output = photos.parent / "emb.npy"
    assert main(["embed", str(photos), "--output", str(output)], make_client=client_factory()) == 0
    vectors = np.load(output)
    sources = output.with_suffix(".txt").read_text().splitlines()
    assert vectors.shape == (7, 8)
    assert [int(v) for v in vectors[:, 0]] == [int(Path(s).stem) for s in sources]


def test_health_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health"], make_client=client_factory()) == 0
    assert "ready: True" in capsys.readouterr().out
    assert main(["info"], make_client=client_factory()) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checkpoint"] == "tiny/random-beit" and info["num_labels"] == len(LABELS)


def test_a_server_down_for_every_request_fails_the_command(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def down(request: InferRequest) -> Any:
        raise ConnectionRefusedError()

    assert main(["classify", str(photos / "1.png"), "--json"], make_client=client_factory(down)) == 1
    assert "failed: image 0 (" in (err := capsys.readouterr().err) and "server unavailable: " in err


# ---- what a newcomer meets: streaming, progress, output folders, empty folders, random weights, Ctrl-C


class Terminal(io.StringIO):
    """A stdout that says whether it is a terminal, and signals when a text first appears on it."""

    def __init__(self, tty: bool, awaited: str = "") -> None:
        super().__init__()
        self.tty = tty
        self.awaited = awaited
        self.seen = threading.Event()

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.awaited and self.awaited in self.getvalue():
            self.seen.set()
        return written


def test_results_stream_in_input_order_before_the_job_ends(
    photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = collect_sources([str(photos)])
    stdout = Terminal(tty=False, awaited=sources[0])
    streamed_before_the_last_group: list[bool] = []

    def slow_last_group(request: InferRequest) -> Any:
        if request.batch_size < MAX_BATCH_SIZE:
            # The last group (3 of the 7 images) waits until the first group's results are on stdout.
            streamed_before_the_last_group.append(stdout.seen.wait(timeout=10))
        return beit_handler(request)

    monkeypatch.setattr("sys.stdout", stdout)
    code = main(
        ["classify", str(photos), "--json", "--concurrency", "1"], make_client=client_factory(slow_last_group)
    )
    assert code == 0
    assert streamed_before_the_last_group == [True]
    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [line["source"] for line in lines] == sources
    # stdout is a pipe here, so a progress bar goes to stderr.
    assert "7/7" in capsys.readouterr().err


def test_no_progress_bar_when_results_go_to_a_terminal(
    photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdout", Terminal(tty=True))
    assert main(["classify", str(photos)], make_client=client_factory()) == 0
    assert "7/7" not in capsys.readouterr().err


def test_output_into_a_missing_folder_creates_it(photos: Path) -> None:
    output = photos.parent / "new" / "deeper" / "results.jsonl"
    assert (
        main(
            ["classify", str(photos), "--output", str(output), "--no-progress"], make_client=client_factory()
        )
        == 0
    )
    assert len(read_results(output)) == 7


@pytest.mark.parametrize("command", ["classify", "embed"])
def test_output_that_cannot_be_written_is_refused_before_sending_anything(
    photos: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = photos.parent / "a-file"
    blocker.write_text("in the way")
    sent: list[InferRequest] = []

    def record(request: InferRequest) -> Any:
        sent.append(request)
        return beit_handler(request)

    output = blocker / "results.out"
    assert main([command, str(photos), "--output", str(output)], make_client=client_factory(record)) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"beit-client: error: cannot create {blocker} for {output}: File exists"
    assert sent == []


def test_a_folder_without_images_says_so_and_fails(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = photos.parent / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    for command in ("classify", "embed"):
        assert main([command, str(photos), str(empty)], make_client=client_factory()) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith(f"beit-client: error: no image files in {empty} (looked for .bmp, ")


def test_a_random_weights_model_is_named_as_noise_in_classify_and_info(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warning = "warning: the server's model (tiny/random-beit) has random weights: its predictions are noise"
    for command in (["classify", str(photos / "1.png")], ["info"]):
        assert main(command, make_client=client_factory(random_weights=True)) == 0
        assert warning in capsys.readouterr().err
        assert main(command, make_client=client_factory(random_weights=False)) == 0
        assert "random weights" not in capsys.readouterr().err


def test_ctrl_c_in_a_batch_job_exits_130_and_reports_what_was_written(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = photos.parent / "results.jsonl"
    sent: list[int] = []

    def interrupted_at_the_second_group(request: InferRequest) -> Any:
        sent.append(request.batch_size)
        if len(sent) == 2:
            raise KeyboardInterrupt
        return beit_handler(request)

    args = ["classify", str(photos), "--output", str(output), "--no-progress", "--concurrency", "1"]
    assert main(args, make_client=client_factory(interrupted_at_the_second_group)) == EXIT_INTERRUPTED
    assert len(sent) == 2
    written = read_results(output)
    assert len(written) == 4
    assert (
        f"beit-client: interrupted: 4 written to {output}; run the same command again"
        in capsys.readouterr().err
    )
