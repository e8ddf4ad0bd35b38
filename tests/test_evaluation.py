"""`evaluate` without a server: its figures against direct computations written here from the definitions
(plain Python loops, no scikit-learn), label mapping by text and WordNet id, datasets, the results file."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from beit_build.labels import imagenet1k_labels, imagenet22k_labels
from beit_client import EvaluationError, LabeledImage, ModelInfo, Prediction
from beit_client._datasets import LabelMap, read_dataset
from beit_client._evaluation import EvaluationRun
from beit_client._imagenet import IMAGENET_1K, IMAGENET_22K
from beit_client._metrics import ReportContext, average_precision, multi_class_report, multi_label_report
from beit_preprocessing import PreprocessingConfig

# ---------------------------------------------------------------- the direct computations


def direct_average_precision(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Sum over the distinct scores t, highest first, of (R(t) - R(previous t)) * P(t), where P and R are
    the precision and recall of predicting "score >= t": scikit-learn's average_precision_score."""
    total_positives = sum(positives)
    ap, previous_recall = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        selected = [p for s, p in zip(scores, positives, strict=True) if s >= t]
        precision, recall = sum(selected) / len(selected), sum(selected) / total_positives
        ap += (recall - previous_recall) * precision
        previous_recall = recall
    return ap


def direct_f1(tp: int, fp: int, fn: int) -> float:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def context(labels: Sequence[str], pairs: int = 10) -> ReportContext:
    return ReportContext("ckpt", False, "label text", labels, (), pairs)


# ---------------------------------------------------------------- average precision


def test_average_precision_is_scikit_learns_on_its_documented_example_and_a_hand_worked_tie() -> None:
    # scikit-learn's docstring example for average_precision_score: 0.83...
    assert average_precision([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(5 / 6, abs=1e-15)
    # Two images tied at 0.9, one of them positive, then a positive at 0.5: the tie is one step,
    # P = 1/2 at R = 1/2, then P = 2/3 at R = 1: AP = 1/2 * 1/2 + 1/2 * 2/3.
    assert average_precision([0.9, 0.9, 0.5, 0.2], [1, 0, 1, 0]) == pytest.approx(1 / 4 + 1 / 3, abs=1e-15)
    assert average_precision([0.2, 0.3, 0.9], [0, 1, 1]) == 1.0
    with pytest.raises(ValueError, match="positive"):
        average_precision([0.5, 0.6], [0, 0])


def test_average_precision_agrees_with_the_direct_computation_on_random_scores_with_ties() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 30)
        scores = [round(rng.random(), 1) for _ in range(n)]  # one decimal: many ties
        positives = [rng.random() < 0.4 for _ in range(n)]
        if not any(positives):
            positives[rng.randrange(n)] = True
        assert average_precision(scores, positives) == pytest.approx(
            direct_average_precision(scores, positives), abs=1e-12
        )


# ---------------------------------------------------------------- report figures


def test_multi_class_figures_agree_with_the_direct_computation() -> None:
    rng = random.Random(3)
    labels = [f"class {i}" for i in range(8)]
    truth = [rng.randrange(6) for _ in range(300)]
    # Answers right more often than chance, so that every figure is far from 0 and 1.
    answers = []
    for t in truth:
        ranked = rng.sample(range(8), 8)
        if rng.random() < 0.4:
            ranked.remove(t)
            ranked.insert(rng.randrange(3), t)
        answers.append(ranked[:5])
    report = multi_class_report(context(labels, pairs=4), truth, answers, top_k=5)

    n = len(truth)
    assert report.images == n and report.classes == 6
    assert report.top1_accuracy == sum(a[0] == t for t, a in zip(truth, answers, strict=True)) / n
    assert report.top_k_accuracy == sum(t in a for t, a in zip(truth, answers, strict=True)) / n
    for row in report.per_class:
        c = row.index
        mine = [a for t, a in zip(truth, answers, strict=True) if t == c]
        correct = sum(a[0] == c for a in mine)
        answered_c = sum(a[0] == c for a in answers)
        assert row.label == labels[c] and row.support == len(mine)
        assert row.top1_accuracy == row.recall == correct / len(mine)
        assert row.top_k_accuracy == sum(c in a for a in mine) / len(mine)
        assert row.precision == correct / answered_c
        assert row.f1 == pytest.approx(
            direct_f1(correct, answered_c - correct, len(mine) - correct), abs=1e-15
        )
    assert report.mean_class_accuracy == pytest.approx(
        sum(row.recall for row in report.per_class) / 6, abs=1e-15
    )
    wrong = Counter((t, a[0]) for t, a in zip(truth, answers, strict=True) if a[0] != t)
    expected = sorted(wrong.items(), key=lambda item: (-item[1], item[0]))[:4]
    assert [((p.true_index, p.predicted_index), p.count) for p in report.confused_pairs] == expected
    assert report.confused_pairs[0].true_label == labels[expected[0][0][0]]
    assert report.titled_summary() == {
        "top-1 accuracy": report.top1_accuracy,
        "top-5 accuracy": report.top_k_accuracy,
        "mean class accuracy": report.mean_class_accuracy,
    }


def test_multi_label_figures_agree_with_the_direct_computation() -> None:
    rng = random.Random(5)
    labels = [f"tag {i}" for i in range(12)]
    classes = [1, 3, 4, 7, 9, 11]  # class 11 is named but no classified image has it
    truth = [sorted(rng.sample([1, 3, 4, 7, 9], rng.randint(1, 3))) for _ in range(120)]
    scores = [
        [round(min(1.0, rng.random() * 0.7 + (0.35 if c in t else 0.0)), 2) for c in classes] for t in truth
    ]
    threshold = 0.6
    report = multi_label_report(context(labels, pairs=5), truth, classes, scores, threshold)

    evaluated = [1, 3, 4, 7, 9]
    tp = fp = fn = 0
    f1s, aps = [], []
    for row, c in zip(report.per_class, evaluated, strict=True):
        j = classes.index(c)
        has = [c in t for t in truth]
        predicted = [s[j] >= threshold for s in scores]
        ctp = sum(h and p for h, p in zip(has, predicted, strict=True))
        cfp = sum(p and not h for h, p in zip(has, predicted, strict=True))
        cfn = sum(h and not p for h, p in zip(has, predicted, strict=True))
        tp, fp, fn = tp + ctp, fp + cfp, fn + cfn
        ap = direct_average_precision([s[j] for s in scores], has)
        f1s.append(direct_f1(ctp, cfp, cfn))
        aps.append(ap)
        assert (row.index, row.label, row.support) == (c, labels[c], sum(has))
        assert row.precision == pytest.approx(ctp / (ctp + cfp), abs=1e-15)
        assert row.recall == pytest.approx(ctp / (ctp + cfn), abs=1e-15)
        assert row.f1 == pytest.approx(f1s[-1], abs=1e-15)
        assert row.average_precision == pytest.approx(ap, abs=1e-12)
    assert report.classes == 5 and report.images == 120 and report.threshold == threshold
    assert report.mean_average_precision == pytest.approx(sum(aps) / 5, abs=1e-12)
    assert report.micro_f1 == pytest.approx(direct_f1(tp, fp, fn), abs=1e-15)
    assert report.macro_f1 == pytest.approx(sum(f1s) / 5, abs=1e-15)
    assert 0.2 < report.macro_f1 < 0.9 and 0.2 < report.mean_average_precision < 0.95
    confused: Counter[tuple[int, int]] = Counter()
    for t, s in zip(truth, scores, strict=True):
        wrong = [c for c in evaluated if s[classes.index(c)] >= threshold and c not in t]
        confused.update((a, b) for a in t for b in wrong)
    expected = sorted(confused.items(), key=lambda item: (-item[1], item[0]))[:5]
    assert [((p.true_index, p.predicted_index), p.count) for p in report.confused_pairs] == expected


# ---------------------------------------------------------------- label mapping


def test_names_map_by_label_text_first_name_or_wordnet_id_of_the_served_imagenet_list() -> None:
    one_k = LabelMap.for_labels(imagenet1k_labels())
    assert one_k.standard == "imagenet-1k"
    images = [
        LabeledImage("a.jpg", ("tench, Tinca tinca",)),
        LabeledImage("b.jpg", ("GOLDFISH",)),  # the first name, any case
        LabeledImage("c.jpg", ("n01440764", "n15075141")),  # ImageNet's first and last WordNet ids
        LabeledImage("d.jpg", (281,)),  # an output index, as JSON lines may give it
    ]
    assert [s.truth for s in one_k.samples(images)] == [(0,), (1,), (0, 999), (281,)]
    twenty_two_k = LabelMap.for_labels(imagenet22k_labels())
    assert twenty_two_k.standard == "imagenet-22k"
    [tabby, frame] = twenty_two_k.samples(
        [LabeledImage("x", ("n02123045",)), LabeledImage("y", ("n03931765",))]
    )
    assert (tabby.truth, frame.truth) == ((2397,), (9205,))


def test_unmapped_and_ambiguous_names_are_one_error_listing_every_one() -> None:
    label_map = LabelMap.for_labels(imagenet1k_labels())
    images = [
        LabeledImage("a.jpg", ("not a class",)),
        LabeledImage("b.jpg", ("crane",)),  # two ImageNet-1k classes: the bird and the machine
        LabeledImage("c.jpg", ("n99999999", "tench")),
        LabeledImage("d.jpg", (1000,)),
    ]
    with pytest.raises(EvaluationError) as raised:
        label_map.samples(images)
    assert raised.value.unmapped == ("1000", "n99999999", "not a class")
    message = str(raised.value)
    assert "3 label name(s) match none of the server's 1000 labels" in message
    assert "by label text or WordNet id: '1000', 'n99999999', 'not a class'" in message
    assert "'crane' names 2 served labels: 134 'crane', 517 'crane' (use its WordNet id)" in message


def test_wordnet_ids_map_only_on_a_head_serving_an_imagenet_list() -> None:
    label_map = LabelMap.for_labels([f"class {i}" for i in range(10)])
    assert label_map.standard is None
    with pytest.raises(
        EvaluationError, match="WordNet ids map only when the served labels are ImageNet"
    ) as e:
        label_map.samples([LabeledImage("a.jpg", ("n01440764",)), LabeledImage("b.jpg", ("class 3",))])
    assert e.value.unmapped == ("n01440764",)


def test_a_1k_list_spelled_a_little_differently_still_maps_wordnet_ids_a_different_list_does_not() -> None:
    labels = imagenet1k_labels()
    # Case and spacing aside, 10 of 1,000 spelled otherwise (a Hub id2label) still serve ImageNet-1k; 20 not.
    spaced = ["  " + label.upper() + " " for label in labels]
    assert LabelMap.for_labels(spaced).standard == "imagenet-1k"
    respelled = [label + " (Hub)" if i % 100 == 0 else label for i, label in enumerate(labels)]
    assert LabelMap.for_labels(respelled).standard == "imagenet-1k"
    respelled = [label + " (Hub)" if i % 50 == 0 else label for i, label in enumerate(labels)]
    assert LabelMap.for_labels(respelled).standard is None
    reordered = labels[500:] + labels[:500]
    assert LabelMap.for_labels(reordered).standard is None


def test_the_shipped_wordnet_id_lists_are_sorted_and_name_what_beit_build_serves() -> None:
    for class_list, served in ((IMAGENET_1K, imagenet1k_labels()), (IMAGENET_22K, imagenet22k_labels())):
        wnids, lemmas = class_list.read()
        assert wnids == sorted(wnids) and len(set(wnids)) == class_list.num_labels
        assert lemmas == served
    wnids_1k, _ = IMAGENET_1K.read()
    wnids_22k, _ = IMAGENET_22K.read()
    # fall11 lacks one ImageNet-1k synset, n04399382 (teddy bear): a 22k head cannot name it.
    assert set(wnids_1k) - set(wnids_22k) == {"n04399382"}
    provenance = (IMAGENET_1K.path.parent / "PROVENANCE.md").read_text()
    assert "timm-1.0.31-py3-none-any.whl" in provenance and "imagenet22k_synsets.tsv" in provenance


# ---------------------------------------------------------------- datasets


def test_csv_and_jsonl_datasets_resolve_paths_beside_the_file_and_gather_a_path_s_labels(
    tmp_path: Path,
) -> None:
    (tmp_path / "labels.csv").write_text(
        'path,label,notes\nimg/a.jpg,cat|dog,x\nimg/b.jpg,"tabby, tabby cat",\nimg/a.jpg,bird,\n'
        "https://example.com/c.png,cat,\n"
    )
    assert read_dataset(tmp_path / "labels.csv") == [
        LabeledImage(str(tmp_path / "img/a.jpg"), ("cat", "dog", "bird")),
        LabeledImage(str(tmp_path / "img/b.jpg"), ("tabby, tabby cat",)),
        LabeledImage("https://example.com/c.png", ("cat",)),
    ]
    (tmp_path / "labels.jsonl").write_text(
        '{"path": "a.jpg", "label": "cat"}\n\n{"path": "/abs/b.jpg", "labels": ["cat", 3]}\n'
    )
    assert read_dataset(tmp_path / "labels.jsonl") == [
        LabeledImage(str(tmp_path / "a.jpg"), ("cat",)),
        LabeledImage("/abs/b.jpg", ("cat", 3)),
    ]


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("a.csv", "file,class\na.jpg,cat\n", "must name the columns, among them 'path' and 'label'"),
        ("a.csv", "path,label\na.jpg,\n", "line 2: a row needs a path and a label"),
        ("a.jsonl", '{"path": "a.jpg"}\n', "line 1: expected an object with a 'path'"),
        ("a.jsonl", "{not json\n", "line 1: not JSON"),
        ("a.txt", "a.jpg cat\n", "a dataset is a folder of class folders, a .csv or a .jsonl file"),
    ],
)
def test_a_malformed_dataset_file_names_the_file_and_line(
    tmp_path: Path, name: str, content: str, error: str
) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(EvaluationError, match=error):
        read_dataset(tmp_path / name)


def test_class_folders_are_read_recursively_and_loose_images_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "cat" / "more").mkdir(parents=True)
    (tmp_path / "dog").mkdir()
    for path in ("cat/b.jpg", "cat/more/a.PNG", "dog/c.jpeg", "dog/notes.txt"):
        (tmp_path / path).write_bytes(b"")
    assert read_dataset(tmp_path) == [
        LabeledImage(str(tmp_path / "cat/b.jpg"), ("cat",)),
        LabeledImage(str(tmp_path / "cat/more/a.PNG"), ("cat",)),
        LabeledImage(str(tmp_path / "dog/c.jpeg"), ("dog",)),
    ]
    (tmp_path / "loose.jpg").write_bytes(b"")
    with pytest.raises(EvaluationError, match=r"holds images outside class folders \('loose.jpg'\)"):
        read_dataset(tmp_path)


# ---------------------------------------------------------------- the results file


def model_info(num_labels: int = 10, multi_label: bool = False, checkpoint: str = "ckpt") -> ModelInfo:
    return ModelInfo(checkpoint, num_labels, 32, 8, False, multi_label, PreprocessingConfig())


LABELS = [f"class {i}" for i in range(10)]
IMAGES = [LabeledImage(f"img{i}.jpg", (f"class {i % 3}",)) for i in range(6)]


def answer(index: int) -> list[Prediction]:
    return [Prediction(LABELS[(index + j) % 10], 0.5 / (j + 1), (index + j) % 10) for j in range(5)]


def start(output: Path, **changes: object) -> EvaluationRun:
    settings: dict[str, object] = dict(top_k=5, threshold=0.5, confused_pairs=10, output=output)
    info = changes.pop("info", model_info())
    settings.update(changes)
    return EvaluationRun.start(IMAGES, info, LABELS, **settings)  # type: ignore[arg-type]


def test_a_rerun_skips_recorded_images_and_drops_a_torn_last_line(tmp_path: Path) -> None:
    output = tmp_path / "results.jsonl"
    with start(output) as run:
        assert run.sources == [image.source for image in IMAGES]
        run.record([0, 1, 2], [answer(0), answer(1), answer(2)])
    lines = output.read_text().splitlines()
    assert json.loads(lines[0])["beit_client_evaluation"] == 1 and len(lines) == 4
    output.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # killed while writing img2's line

    with start(output) as run:
        assert (run.done, run.processed, run.total) == (2, 2, 6)
        assert run.sources == ["img2.jpg", "img3.jpg", "img4.jpg", "img5.jpg"]
        run.record(range(4), [answer(2), answer(0), answer(1), answer(0)])
        report = run.report()
    sources = [json.loads(line)["source"] for line in output.read_text().splitlines()[1:]]
    assert sorted(sources) == sorted(image.source for image in IMAGES)
    # img0..2 answered their own class first, img3..5 class 0, 1, 0 against their classes 0, 1, 2.
    assert report.images == 6 and report.top1_accuracy == 5 / 6


def test_a_results_file_of_another_evaluation_is_refused(tmp_path: Path) -> None:
    output = tmp_path / "results.jsonl"
    with start(output) as run:
        run.record([0], [answer(0)])
    with pytest.raises(EvaluationError, match=r"holds another evaluation \(checkpoint 'ckpt' there, 'other'"):
        start(output, info=model_info(checkpoint="other"))
    with pytest.raises(EvaluationError, match="top k 5 there, 8 now"):
        start(output, top_k=8)
    # Fewer answers than the file holds are read from it: the file keeps its top 5.
    with start(output, top_k=1) as run:
        assert run.answers_k == 5 and run.done == 1
    (tmp_path / "other.jsonl").write_text('{"source": "x"}\n')
    with pytest.raises(EvaluationError, match="is not a results file of `evaluate`"):
        start(tmp_path / "other.jsonl")


def test_a_multi_class_head_refuses_images_with_several_labels(tmp_path: Path) -> None:
    images = [LabeledImage("a.jpg", ("class 1", "class 2")), LabeledImage("b.jpg", ("class 1",))]
    with pytest.raises(EvaluationError, match=r"1 image\(s\) have several labels, but ckpt is multi-class"):
        EvaluationRun.start(
            images, model_info(), LABELS, top_k=5, threshold=0.5, confused_pairs=3, output=None
        )
