"""The beit-client CLI on the in-memory transport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from beit_client import BeitClient, InferRequest, MockTransport, RetryPolicy
from beit_client.cli import classify_to_file, collect_sources, main
from tests.test_client_fakes import LABELS, beit_handler, image_bytes, label_index, model_configs


def client_factory(handler: Any = beit_handler) -> Any:
    def make(args: Any) -> BeitClient:
        transport = MockTransport(handler, model_configs=model_configs())
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
    assert "unreachable" in capsys.readouterr().err
