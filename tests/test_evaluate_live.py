"""`evaluate` against the real embedded Triton server, on generated labeled folders: its figures are what a
direct computation makes of raw tritonclient answers, sync and async, over both protocols; the CLI's table,
JSON report and PNG; a rerun resumes; Ctrl-C stops it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from beit_build.labels import imagenet1k_labels
from beit_client import BeitClient
from beit_client.cli import EXIT_INTERRUPTED, main
from tests.checkpoints import save_tiny_checkpoint
from tests.conftest import free_port
from tests.images import encode, photo
from tests.jobs import lines_in, start_foreground_job
from tests.test_client_live import KINDS, PROTOCOLS, Client, raw_infer, server_url
from tests.test_evaluation import direct_average_precision, direct_f1

pytestmark = pytest.mark.server

CLASSES = ["class 0", "class 2", "class 5", "class 7", "class 9"]


def make_folder(root: Path, names: list[str], per_class: int, seed: int = 0) -> dict[str, list[Path]]:
    """`root/<name>/NN.jpg|png` for each name: varied sizes and content."""
    images: dict[str, list[Path]] = {}
    for k, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = photo(40 + 13 * i, 30 + 7 * k, seed=seed + 100 * k + i)
            path = folder / f"{i:02d}.{'png' if i % 2 else 'jpg'}"
            path.write_bytes(encode(image, "PNG" if i % 2 else "JPEG"))
            images.setdefault(name, []).append(path)
    return images


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    root = tmp_path_factory.mktemp("labeled") / "val"
    return root, make_folder(root, CLASSES, per_class=6)


def inference_count(http_url: str) -> int:
    with urllib.request.urlopen(f"{http_url}/v2/models/beit/stats", timeout=10) as response:
        [stats] = json.load(response)["model_stats"]
    return int(stats["inference_count"])


# ---------------------------------------------------------------- the served labels


@pytest.mark.parametrize("kind", KINDS)
def test_labels_are_the_served_label_of_each_output_index(triton_server: Any, kind: str) -> None:
    with Client(kind, triton_server.grpc_url) as client:
        assert client.labels() == [f"class {i}" for i in range(10)]


# ---------------------------------------------------------------- multi-class figures


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
def test_multi_class_figures_are_the_direct_computation_from_raw_tritonclient_answers(
    triton_server: Any, labeled: tuple[Path, dict[str, list[Path]]], protocol: str, kind: str
) -> None:
    root, images = labeled
    with Client(kind, server_url(triton_server, protocol)) as client:
        report = client.evaluate(root, top_k=3, confused_pairs=4)

    truth, answers = [], []
    for name, paths in images.items():
        rows = raw_infer(triton_server, protocol, "beit", [p.read_bytes() for p in paths], "PROBABILITIES", 3)
        for row in rows:
            truth.append(int(name.removeprefix("class ")))
            answers.append([int(entry.decode().split(":")[1]) for entry in row])
    n = len(truth)
    top1 = sum(a[0] == t for t, a in zip(truth, answers, strict=True)) / n
    top3 = sum(t in a for t, a in zip(truth, answers, strict=True)) / n
    assert 0 < top3 < 1, "the figures should tell right from wrong answers"
    assert (report.images, report.classes, report.top_k, report.failures) == (30, 5, 3, ())
    assert (report.top1_accuracy, report.top_k_accuracy) == (top1, top3)
    assert report.label_mapping == "label text" and not report.multi_label
    for row in report.per_class:
        mine = [a for t, a in zip(truth, answers, strict=True) if t == row.index]
        correct, answered = sum(a[0] == row.index for a in mine), sum(a[0] == row.index for a in answers)
        assert (row.label, row.support) == (f"class {row.index}", 6)
        assert (row.top1_accuracy, row.top_k_accuracy) == (correct / 6, sum(row.index in a for a in mine) / 6)
        assert row.precision == (correct / answered if answered else 0.0)
        assert row.f1 == pytest.approx(direct_f1(correct, answered - correct, 6 - correct), abs=1e-15)
    wrong = Counter((t, a[0]) for t, a in zip(truth, answers, strict=True) if t != a[0])
    expected = sorted(wrong.items(), key=lambda item: (-item[1], item[0]))[:4]
    assert [((p.true_index, p.predicted_index), p.count) for p in report.confused_pairs] == expected


# ---------------------------------------------------------------- multi-label, WordNet ids


@pytest.fixture(scope="module")
def imagenet_multi_label_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A tiny multi-label head serving the ImageNet-1k labels, so that folders may be WordNet ids."""
    from beit_build import build_repository
    from beit_serve import EmbeddedServer

    labels = imagenet1k_labels()
    checkpoint = save_tiny_checkpoint(
        tmp_path_factory.mktemp("imagenet-multi-label"),
        num_labels=1000,
        multi_label=True,
        id2label=dict(enumerate(labels)),
        seed=1,
    )
    repository = tmp_path_factory.mktemp("imagenet-multi-label-repository")
    build_repository(checkpoint, repository)
    server = EmbeddedServer(
        repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_file=tmp_path_factory.mktemp("imagenet-multi-label-log") / "triton.log",
    )
    with server:
        yield server


@pytest.mark.parametrize(("protocol", "kind"), [("http", "sync"), ("grpc", "async")])
def test_multi_label_figures_are_the_direct_computation_from_the_served_probabilities(
    imagenet_multi_label_server: Any, tmp_path: Path, protocol: str, kind: str
) -> None:
    # ImageNet val names its folders by WordNet id; a folder may also be a label's text or first name.
    names = ["n01440764", "n02123045", "goldfish", "n04599235"]
    images = make_folder(tmp_path / "val", names, per_class=5, seed=7)
    indices = {"n01440764": 0, "n02123045": 281, "goldfish": 1, "n04599235": 911}
    output = tmp_path / "results.jsonl"
    threshold = 0.3
    with Client(kind, server_url(imagenet_multi_label_server, protocol)) as client:
        report = client.evaluate(tmp_path / "val", threshold=threshold, output=output, confused_pairs=3)
    assert report.multi_label and report.label_mapping == "label text or WordNet id (imagenet-1k)"

    header, *lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert header["classes"] == [0, 1, 281, 911] and len(lines) == 20
    recorded = {line["source"]: line["scores"] for line in lines}
    classes = header["classes"]
    truth, scores = [], []
    for name, paths in images.items():
        raw = raw_infer(
            imagenet_multi_label_server, protocol, "beit", [p.read_bytes() for p in paths], "PROBABILITIES"
        )
        for path, row in zip(paths, np.asarray(raw, dtype=np.float32), strict=True):
            # What the results file holds is what the server answered, for the classes the dataset names.
            np.testing.assert_allclose(recorded[str(path)], row[classes], rtol=0, atol=1e-6)
            truth.append(indices[name])
            scores.append(recorded[str(path)])

    tp = fp = fn = 0
    aps, f1s = [], []
    for row, c in zip(report.per_class, classes, strict=True):
        j = classes.index(c)
        has = [t == c for t in truth]
        predicted = [s[j] >= threshold for s in scores]
        ctp = sum(h and p for h, p in zip(has, predicted, strict=True))
        cfp = sum(p and not h for h, p in zip(has, predicted, strict=True))
        tp, fp, fn = tp + ctp, fp + cfp, fn + (5 - ctp)
        aps.append(direct_average_precision([s[j] for s in scores], has))
        f1s.append(direct_f1(ctp, cfp, 5 - ctp))
        assert (row.index, row.label, row.support) == (c, imagenet1k_labels()[c], 5)
        assert row.average_precision == pytest.approx(aps[-1], abs=1e-12)
        assert row.f1 == pytest.approx(f1s[-1], abs=1e-15)
    assert report.mean_average_precision == pytest.approx(sum(aps) / 4, abs=1e-12)
    assert report.micro_f1 == pytest.approx(direct_f1(tp, fp, fn), abs=1e-15)
    assert report.macro_f1 == pytest.approx(sum(f1s) / 4, abs=1e-15)
    assert 0 < report.mean_average_precision < 1


# ---------------------------------------------------------------- the CLI


def test_the_cli_prints_the_table_and_writes_the_json_report_and_png_beside_the_results(
    triton_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "val"
    make_folder(root, CLASSES, per_class=4)
    corrupt = root / "class 5" / "corrupt.jpg"
    corrupt.write_bytes(b"not an image" * 10)
    output = tmp_path / "runs" / "val.jsonl"
    url = triton_server.http_url
    command = ["evaluate", str(root), "--url", url, "--output", str(output), "--top-k", "2", "--no-progress"]
    assert main(command) == 1
    out, err = capsys.readouterr()
    failed = f"failed: {corrupt}: not an image in a supported format (JPEG, PNG, WEBP, BMP, GIF, TIFF)"
    assert failed in err.splitlines() and "1 image(s) failed" in err

    written = json.loads((tmp_path / "runs" / "val.report.json").read_text())
    # A rerun sends only the failed image again; the report it makes is the one the CLI wrote.
    sent = inference_count(url)
    with BeitClient(url) as client:
        report = client.evaluate(root, top_k=2, output=output)
    assert inference_count(url) == sent + 1
    assert written == report.to_dict()
    assert written["failed"] == 1 and written["images"] == 20 and written["task"] == "multi-class"
    assert set(written["metrics"]) == {"top1_accuracy", "top2_accuracy", "mean_class_accuracy"}
    assert f"top-1 accuracy: {report.top1_accuracy:.2%}" in out.splitlines()
    assert f"top-2 accuracy: {report.top_k_accuracy:.2%}" in out.splitlines()
    table = out.splitlines()[out.splitlines().index("per class, weakest first:") + 2 :][:5]
    weakest = min(report.per_class, key=lambda row: (row.top1_accuracy, -row.support, row.index))
    assert table[0].split() == [
        str(weakest.index), "4", f"{weakest.top1_accuracy:.2%}", f"{weakest.top_k_accuracy:.2%}",
        f"{weakest.precision:.2%}", f"{weakest.f1:.2%}", *weakest.label.split(),
    ]  # fmt: skip
    pair = report.confused_pairs[0]
    assert f"{pair.count:>9}  {pair.true_label} -> {pair.predicted_label}" in out.splitlines()
    with Image.open(tmp_path / "runs" / "val.report.png") as png:
        assert png.format == "PNG" and png.width >= 1000


def test_an_unmapped_folder_name_is_one_error_line_listing_it_and_nothing_is_classified(
    triton_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "val"
    make_folder(root, ["class 1", "cat", "n01440764"], per_class=1)
    output = tmp_path / "results.jsonl"
    assert main(["evaluate", str(root), "--url", triton_server.grpc_url, "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: 2 label name(s) match none of the server's 10 labels ('class 0', ")
    assert "by label text: 'cat', 'n01440764'; WordNet ids map only when the served labels are" in line
    assert not output.exists()


def test_ctrl_c_stops_an_evaluation_within_a_second_and_a_rerun_finishes_it_exactly_once(
    triton_server: Any, tmp_path: Path
) -> None:
    root = tmp_path / "val"
    image = encode(photo(160, 120), "JPEG")
    count = 800
    for i in range(count):
        folder = root / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:04d}.jpg").write_bytes(image)
    output = tmp_path / "results" / "val.jsonl"
    command = [
        Path(sys.executable).parent / "beit-client", "evaluate", root, "--url", triton_server.grpc_url,
        "--output", output, "--concurrency", "2",
    ]  # fmt: skip
    job = start_foreground_job(command)
    deadline = time.monotonic() + 120
    while lines_in(output) < 33 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.poll() is None, "the job ended before it could be interrupted"
    job.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, err = job.communicate(timeout=60)
    elapsed = time.monotonic() - start
    assert job.returncode == EXIT_INTERRUPTED and elapsed < 1.0, (elapsed, err[-2000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert f"images done; the results are in {output}: run the same command again to finish" in err
    done = lines_in(output) - 1
    assert 32 <= done < count

    rerun = subprocess.run([*command, "--no-progress"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"images: {count} classified, 0 failed; classes: 5" in rerun.stdout
    sources = [json.loads(line)["source"] for line in output.read_text().splitlines()[1:]]
    assert len(sources) == len(set(sources)) == count
