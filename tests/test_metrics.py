"""llmos_lab.metrics: class and entity reports checked against numbers worked out by hand."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from llmos_lab.metrics import ClassificationReport, majority_baseline

# ten pets: rows of the hand-made confusion matrix below are counted from these lists
Y_TRUE = ["cat", "cat", "cat", "dog", "dog", "bird", "bird", "bird", "bird", "cat"]
Y_PRED = ["cat", "dog", "cat", "dog", "cat", "bird", "bird", "dog", "bird", "cat"]
LABELS = ["bird", "cat", "dog"]
# rows: true bird / cat / dog; columns: predicted bird / cat / dog
CONFUSION = np.array([
    [3, 0, 1],
    [0, 3, 1],
    [0, 1, 1],
])
# by hand: precision = correct / predicted, recall = correct / true
PRECISION = {"bird": 3 / 3, "cat": 3 / 4, "dog": 1 / 3}
RECALL = {"bird": 3 / 4, "cat": 3 / 4, "dog": 1 / 2}
F1 = {"bird": 6 / 7, "cat": 3 / 4, "dog": 2 / 5}
SUPPORT = {"bird": 4, "cat": 4, "dog": 2}


@pytest.fixture
def pets() -> ClassificationReport:
    return ClassificationReport.from_labels(Y_TRUE, Y_PRED)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_from_labels_per_class(pets):
    assert pets.labels == LABELS
    for label in LABELS:
        row = pets.table.loc[label]
        assert row["precision"] == pytest.approx(PRECISION[label])
        assert row["recall"] == pytest.approx(RECALL[label])
        assert row["f1"] == pytest.approx(F1[label])
        assert row["support"] == SUPPORT[label]
        p, r = PRECISION[label], RECALL[label]
        assert row["f1"] == pytest.approx(2 * p * r / (p + r))


def test_from_labels_summary(pets):
    assert pets.accuracy == pytest.approx(7 / 10)
    macro = (6 / 7 + 3 / 4 + 2 / 5) / 3
    assert pets.macro_f1 == pytest.approx(macro)
    assert pets.table.loc["macro avg", "f1"] == pytest.approx(macro)
    weighted = (6 / 7 * 4 + 3 / 4 * 4 + 2 / 5 * 2) / 10
    assert pets.table.loc["weighted avg", "f1"] == pytest.approx(weighted)
    assert pets.table.loc["macro avg", "precision"] == pytest.approx((1 + 3 / 4 + 1 / 3) / 3)
    assert pets.to_dict() == pytest.approx({"accuracy": 0.7, "macro_f1": macro})
    assert pets.task == "sequence-classification"


def test_from_labels_confusion(pets):
    assert list(pets.confusion.index) == LABELS
    assert list(pets.confusion.columns) == LABELS
    np.testing.assert_array_equal(pets.confusion.to_numpy(), CONFUSION)
    # rows are true labels: a true dog predicted as cat sits at (dog, cat)
    assert pets.confusion.loc["dog", "cat"] == 1
    assert pets.confusion.loc["cat", "dog"] == 1
    assert pets.confusion.loc["bird", "dog"] == 1
    assert pets.confusion.loc["dog", "bird"] == 0
    # and the per-class numbers follow from it
    diag = np.diag(CONFUSION)
    np.testing.assert_allclose(diag / CONFUSION.sum(axis=0), [PRECISION[c] for c in LABELS])
    np.testing.assert_allclose(diag / CONFUSION.sum(axis=1), [RECALL[c] for c in LABELS])


def test_from_labels_explicit_labels_keep_order_and_unseen_class():
    labels = ["dog", "cat", "bird", "fish"]
    report = ClassificationReport.from_labels(Y_TRUE, Y_PRED, labels=labels)
    assert report.labels == labels
    assert list(report.confusion.index) == labels
    assert report.confusion.loc["dog", "cat"] == 1
    assert report.confusion.loc["fish"].sum() == 0
    assert report.table.loc["fish", "support"] == 0
    assert report.table.loc["fish", "f1"] == 0
    assert report.table.loc["dog", "precision"] == pytest.approx(1 / 3)
    # the absent class counts in the macro average
    assert report.macro_f1 == pytest.approx((6 / 7 + 3 / 4 + 2 / 5 + 0) / 4)


def test_perfect_predictions():
    report = ClassificationReport.from_labels(["a", "b", "a"], ["a", "b", "a"])
    assert report.accuracy == 1.0
    assert report.macro_f1 == 1.0
    np.testing.assert_array_equal(report.confusion.to_numpy(), [[2, 0], [0, 1]])


# ------------------------------------------------------------------------------- from_tags

TAGS_TRUE = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["O", "B-ORG", "I-ORG", "I-ORG", "O"],
]
TAGS_PRED = [
    ["B-PER", "I-PER", "O", "B-ORG"],
    ["O", "I-ORG", "I-ORG", "I-ORG", "O"],  # no B-: not an entity under strict IOB2
]
# true entities: PER(0:0-1), LOC(0:3), ORG(1:1-3)
# predicted (strict): PER(0:0-1), ORG(0:3); the I-ORG run without B-ORG is no entity
# -> PER correct; LOC missed; ORG predicted once (wrong place) and missed once


@pytest.fixture
def ner() -> ClassificationReport:
    return ClassificationReport.from_tags(TAGS_TRUE, TAGS_PRED)


def test_from_tags_entities_strict(ner):
    assert ner.task == "token-classification"
    assert ner.labels == ["LOC", "ORG", "PER"]
    expected = {  # precision, recall, f1, support
        "PER": (1.0, 1.0, 1.0, 1),
        "LOC": (0.0, 0.0, 0.0, 1),
        "ORG": (0.0, 0.0, 0.0, 1),
    }
    for entity, (p, r, f, n) in expected.items():
        row = ner.table.loc[entity]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p, r, f)), entity
        assert row["support"] == n
    assert ner.macro_f1 == pytest.approx(1 / 3)
    # micro: 1 correct of 2 predicted and of 3 true
    p, r = 1 / 2, 1 / 3
    assert ner.extras["micro_f1"] == pytest.approx(2 * p * r / (p + r))
    assert ner.to_dict()["micro_f1"] == pytest.approx(0.4)


def test_from_tags_token_accuracy_and_confusion(ner):
    # 3 of 4 tokens right in the first sentence, 4 of 5 in the second
    assert ner.accuracy == pytest.approx(7 / 9)
    tags = ["B-LOC", "B-ORG", "B-PER", "I-ORG", "I-PER", "O"]
    assert list(ner.confusion.index) == tags
    assert list(ner.confusion.columns) == tags
    assert ner.confusion.to_numpy().sum() == 9
    assert np.trace(ner.confusion.to_numpy()) == 7
    assert ner.confusion.loc["B-LOC", "B-ORG"] == 1
    assert ner.confusion.loc["B-ORG", "I-ORG"] == 1
    assert ner.confusion.loc["O", "O"] == 3


def test_from_tags_perfect():
    report = ClassificationReport.from_tags(TAGS_TRUE, TAGS_TRUE)
    assert report.accuracy == 1.0
    assert report.macro_f1 == pytest.approx(1.0)
    assert report.extras["micro_f1"] == pytest.approx(1.0)


# -------------------------------------------------------------------------------- rendering


def test_repr_html_names_classes(pets, ner):
    html = pets._repr_html_()
    for label in LABELS:
        assert label in html
    assert "<table" in html
    ner_html = ner._repr_html_()
    for entity in ["PER", "LOC", "ORG"]:
        assert entity in ner_html
    assert "micro_f1" in ner_html


def test_plot_normalised(pets):
    before = plt.get_fignums()
    display = pets.plot()
    ax = display.ax_
    assert plt.get_fignums() == before  # drawn on its own Agg canvas, not through pyplot
    assert display.figure_ is ax.figure and display._repr_png_().startswith(b"\x89PNG")
    assert isinstance(ax, matplotlib.axes.Axes)
    assert len(ax.images) == 1
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(shown, CONFUSION / CONFUSION.sum(axis=1, keepdims=True))
    assert [t.get_text() for t in ax.get_xticklabels()] == LABELS
    assert [t.get_text() for t in ax.get_yticklabels()] == LABELS


def test_plot_counts_on_given_axes(pets):
    _, given = plt.subplots()
    ax = pets.plot(ax=given, normalize=False).ax_
    assert ax is given
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), CONFUSION)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == CONFUSION.size
    assert texts.count("3") == 2


# ----------------------------------------------------------------------- majority_baseline


def test_majority_baseline():
    train = ["pos", "neg", "pos", "neu", "pos"]
    test = ["pos", "neg", "neg", "pos", "neu"]
    assert majority_baseline(train, test) == pytest.approx(2 / 5)
    assert majority_baseline(train, ["neg", "neu"]) == 0.0
    assert majority_baseline(train, ["pos"]) == 1.0
    assert majority_baseline(train, []) == 0.0


# -------------------------------------------------------------------------- edge cases


def test_integer_labels():
    report = ClassificationReport.from_labels([0, 1, 1, 2], [0, 1, 2, 2])
    assert report.accuracy == pytest.approx(3 / 4)
    assert report.labels == [0, 1, 2]
    assert "classes=3" in repr(report)


def test_from_tags_without_entities_is_not_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = ClassificationReport.from_tags([["O", "O"]], [["O", "O"]])
    assert report.accuracy == 1.0
    assert not np.isnan(report.macro_f1)


def test_empty_or_mismatched_labels_are_a_typed_error():
    from llmos_lab.errors import DataError

    with pytest.raises(DataError, match="got 0 and 0"):
        ClassificationReport.from_labels([], [])
    with pytest.raises(DataError, match="got 2 and 1"):
        ClassificationReport.from_labels(["a", "b"], ["a"])
