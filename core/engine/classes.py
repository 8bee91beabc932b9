"""Class labels: one rule for comparing a true label with a model's classes.

A model keeps its classes in their own type (the schema's `classes`: ints, floats, bools or
text, as they were in the training data). Labels arrive in whatever type their file was read
as: a 0/1 column as integers, as floats once it has a hole (1.0), as text from a CSV read as
text ("1", "007"), a yes/no column as booleans from a SQL source whose read_csv guessed so.
Every comparison goes through one canonical text per class (`as_text` of the class) and
`label_texts`, which reads a label the way the classes are typed:
- integer or float classes: a label that is a number (or text of one, "007" included) is that
  number, so 7, 7.0, "7" and "007" all meet class 7;
- boolean classes: true/false, yes/no, y/n, t/f and 1/0 (any case) are True/False;
- the integer classes 0 and 1: booleans and those truth words are 1/0 as well, so a file of
  true/false labels meets a model trained on a 0/1 column;
- text classes: text as it is; numbers as `as_text` spells them; booleans meet the class that
  reads as the same truth value when the classes are such a pair (yes/no, Y/N, ...).
A label that fits no class keeps its own text, so it is reported as a class the model never saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0"})


def as_text(values: Any) -> np.ndarray:
    """Values as text: whole floats as integers (a null-holding int column is float), so 1,
    1.0 and "1" agree; booleans as True/False."""
    array = np.asarray(values)
    if array.dtype.kind == "f" and np.isfinite(array).all() and np.all(np.mod(array, 1) == 0):
        array = array.astype(np.int64)
    return array.astype(str)


def class_kind(classes: tuple[Any, ...] | list[Any]) -> str:
    """bool, number or text: how the model's classes are typed."""
    if classes and all(isinstance(c, bool | np.bool_) for c in classes):
        return "bool"
    if classes and all(
        isinstance(c, int | float | np.integer | np.floating) and not isinstance(c, bool | np.bool_)
        for c in classes
    ):
        return "number"
    return "text"


def truth_pair(classes: tuple[Any, ...] | list[Any]) -> dict[bool, str] | None:
    """For two text classes that read as true and false (yes/no, Y/N, ...), which is which."""
    if len(classes) != 2:
        return None
    words = {str(c).strip().lower(): str(c) for c in classes}
    true = [w for w in words if w in TRUE_WORDS]
    false = [w for w in words if w in FALSE_WORDS]
    if len(true) == 1 and len(false) == 1:
        return {True: words[true[0]], False: words[false[0]]}
    return None


def is_zero_one(classes: tuple[Any, ...] | list[Any]) -> bool:
    """Whether the classes are the numbers 0 and 1 (a 0/1 label), which truth values meet."""
    return class_kind(classes) == "number" and sorted(class_texts(classes)) == ["0", "1"]


def label_texts(values: Any, classes: tuple[Any, ...] | list[Any]) -> np.ndarray:
    """Each label's canonical text, read the way `classes` are typed (see the module doc)."""
    values = np.asarray(values)
    kind = class_kind(classes)
    if values.dtype.kind == "b" and is_zero_one(classes):
        return np.where(values, "1", "0").astype(str)
    if values.dtype.kind in "biuf":
        if kind == "text" and values.dtype.kind == "b":
            pair = truth_pair(classes)
            if pair is not None:
                return np.where(values, pair[True], pair[False]).astype(str)
        if kind == "bool" and values.dtype.kind in "iuf":
            return _bool_words(as_text(values))
        return as_text(values)
    texts = pd.Series(values, dtype=object).map(lambda v: v if isinstance(v, str) else str(v))
    if kind == "number":
        numbers = pd.to_numeric(texts.str.strip(), errors="coerce")
        parsed = numbers.notna().to_numpy()
        out = texts.to_numpy(dtype=object)
        if parsed.any():
            out[parsed] = as_text(numbers[parsed].to_numpy(dtype=np.float64))
        if is_zero_one(classes) and not parsed.all():
            words = np.char.lower(np.char.strip(texts.to_numpy(dtype=str)))
            out[~parsed & np.isin(words, list(TRUE_WORDS))] = "1"
            out[~parsed & np.isin(words, list(FALSE_WORDS))] = "0"
        return out.astype(str)
    if kind == "bool":
        return _bool_words(texts.to_numpy(dtype=str))
    return texts.to_numpy(dtype=str)


def _bool_words(texts: np.ndarray) -> np.ndarray:
    lowered = np.char.lower(np.char.strip(texts.astype(str)))
    out = texts.astype(object)
    out[np.isin(lowered, list(TRUE_WORDS))] = "True"
    out[np.isin(lowered, list(FALSE_WORDS))] = "False"
    return out.astype(str)


def class_texts(classes: tuple[Any, ...] | list[Any]) -> list[str]:
    """The canonical text of each class, in the classes' order."""
    return (
        as_text(
            np.asarray(list(classes), dtype=object if class_kind(classes) == "text" else None)
        ).tolist()
        if classes
        else []
    )


def sort_classes(values: list[Any]) -> list[Any]:
    """Classes in their natural order: numbers by value (2 before 10), booleans False first,
    text by its characters; the positive class of a binary task is the last one."""
    if class_kind(values) in ("number", "bool"):
        return sorted(values)
    return sorted(values, key=str)


def texts_of(values: list[Any], classes: tuple[Any, ...] | list[Any]) -> list[str]:
    """`label_texts` of Python values as a query returns them (one column, so one type)."""
    if not values:
        return []
    kinds = {type(v) for v in values}
    typed = (
        np.asarray(values)
        if len(kinds) == 1 and kinds <= {bool, int, float}
        else (np.asarray(values, dtype=object))
    )
    texts: list[str] = label_texts(typed, classes).tolist()
    return texts


def canonical_sql(
    raw: str, found: list[tuple[str, Any]], classes: tuple[Any, ...] | list[Any]
) -> str:
    """SQL mapping `raw` (a VARCHAR expression of a column) to each value's canonical class
    text, from the column's distinct (text, value) pairs `found`; values whose text already is
    canonical are left as they are."""
    canon = texts_of([value for _, value in found], classes)
    cases = " ".join(
        f"WHEN {_literal(text)} THEN {_literal(c)}"
        for (text, _), c in zip(found, canon, strict=True)
        if text != c
    )
    return f"(CASE {raw} {cases} ELSE {raw} END)" if cases else raw


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
