"""One rule for comparing a true label with a model's classes (core/classes.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from core.engine.classes import class_texts, label_texts, sort_classes, truth_pair


@pytest.mark.parametrize(
    ("classes", "labels", "expected"),
    [
        ([0, 1], [1, 0], ["1", "0"]),
        ([0, 1], [1.0, 0.0], ["1", "0"]),
        ([0, 1], np.asarray(["1", " 0", "001", "maybe"], dtype=object), ["1", "0", "1", "maybe"]),
        ([7, 8], np.asarray(["007"], dtype=object), ["7"]),
        ([0.5, 1.5], np.asarray(["0.5", "1.50"], dtype=object), ["0.5", "1.5"]),
        (
            [False, True],
            np.asarray(["yes", "NO", "t", "F", "1", "0", "true", "x"], dtype=object),
            ["True", "False", "True", "False", "True", "False", "True", "x"],
        ),
        ([False, True], [1, 0], ["True", "False"]),
        (["no", "yes"], [True, False], ["yes", "no"]),
        (["N", "Y"], [True, False], ["Y", "N"]),
        (["red", "blue"], [True, False], ["True", "False"]),  # no truth pair: seen as unknown
        (["défaut", "remboursé"], np.asarray(["défaut"], dtype=object), ["défaut"]),
        (["1", "2", "a"], [1, 2], ["1", "2"]),
        ([0, 1], [True, False], ["1", "0"]),
        (
            [0, 1],
            np.asarray(["true", "FALSE", " Yes ", "n", "1", "maybe"], dtype=object),
            ["1", "0", "1", "0", "1", "maybe"],
        ),
        ([1, 2], [True, False], ["True", "False"]),  # not a 0/1 label: unknown classes
        ([0, 1, 2], np.asarray(["yes"], dtype=object), ["yes"]),
    ],
    ids=[
        "int",
        "int-as-float",
        "int-as-text",
        "leading-zeros",
        "float",
        "bool-words",
        "bool-from-int",
        "yes-no-from-bool",
        "Y-N-from-bool",
        "no-pair",
        "utf8",
        "mixed-text",
        "zero-one-from-bool",
        "zero-one-from-words",
        "one-two-from-bool",
        "three-classes-from-words",
    ],
)
def test_labels_meet_the_classes_as_they_are_typed(
    classes: list[Any], labels: Any, expected: list[str]
) -> None:
    assert label_texts(labels, classes).tolist() == expected
    known = set(class_texts(classes))
    assert all(
        text in known
        for text, want in zip(label_texts(labels, classes), expected, strict=True)
        if want in known
    )


def test_truth_pairs_and_natural_order() -> None:
    assert truth_pair(["no", "yes"]) == {True: "yes", False: "no"}
    assert truth_pair(["Y", "N"]) == {True: "Y", False: "N"}
    assert truth_pair(["yes", "y"]) is None and truth_pair(["a", "b", "c"]) is None
    assert sort_classes([10, 2, 1]) == [1, 2, 10]
    assert sort_classes([True, False]) == [False, True]
    assert sort_classes(["b", "a", "B"]) == ["B", "a", "b"]
    assert class_texts([0, 1]) == ["0", "1"] and class_texts([False, True]) == ["False", "True"]
