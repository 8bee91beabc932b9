"""Request bodies of MLflow's scoring protocol and the Open Inference Protocol read into one
table (issue 17 items 1, 2, 5), replaying the protocols' documented example bodies, and every
malformed body refused with a message that names the problem and never echoes the data."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from core.engine import payloads
from core.errors import InvalidInput, ModelDeckError

ABC = ["a", "b", "c"]
ROWS = {"a": [1, 4], "b": [2, 5], "c": [3, 6]}

# The bodies of MLflow's "Deploy MLflow models" documentation (curl examples), in order.
MLFLOW_DOCS = [
    {"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2, 3], [4, 5, 6]]}},
    {"dataframe_records": [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]},
    {"instances": [[1, 2, 3], [4, 5, 6]]},
    {"inputs": [[1, 2, 3], [4, 5, 6]]},
    {"inputs": {"a": [1, 4], "b": [2, 5], "c": [3, 6]}},
    {"instances": [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]},
]


@pytest.mark.parametrize("body", MLFLOW_DOCS, ids=lambda b: next(iter(b)))
def test_mlflows_documented_bodies_read_as_the_same_table(body: dict[str, object]) -> None:
    table = payloads.read_mlflow(json.dumps(body).encode(), "application/json", ABC)
    assert table.to_pydict() == ROWS


def test_csv_rows_are_read_as_text_for_the_runs_rules() -> None:
    table = payloads.read_mlflow(b"a,b,c\n1,2,3\n4,,6\n", "text/csv; charset=utf-8", ABC)
    assert table.to_pydict() == {"a": ["1", "4"], "b": ["2", None], "c": ["3", "6"]}


def test_csv_line_ends_of_every_system_are_read() -> None:
    # a bare carriage return (old Mac exports) used to fail the csv module: a 500 (fuzzing)
    for newline in (b"\r", b"\r\n", b"\n"):
        body = newline.join([b"a,b,c", b"1,2,3", b'4,"two\nlines",6']) + newline
        table = payloads.read_mlflow(body, "text/csv", ABC)
        assert table.to_pydict() == {"a": ["1", "4"], "b": ["2", "two\nlines"], "c": ["3", "6"]}


def test_an_unreadable_csv_is_refused_with_what_to_fix() -> None:
    with pytest.raises(ModelDeckError, match="CSV body cannot be read") as caught:
        huge = b"x" * 200_000  # over the csv module's field limit (128 KB)
        payloads.read_mlflow(b"a,b,c\n1," + huge + b",3\n", "text/csv", ABC, max_rows=10)
    assert caught.value.status == 400 and "Quote fields" in (caught.value.hint or "")


def test_mixed_numbers_and_text_become_text_and_names_keep_unicode() -> None:
    body = {"dataframe_records": [{"région": "Zoë", "x": 1}, {"région": None, "x": "2.5"}]}
    table = payloads.read_mlflow(json.dumps(body).encode(), "application/json", [])
    assert table.to_pydict() == {"région": ["Zoë", None], "x": ["1", "2.5"]}
    assert table.schema.field("x").type == pa.string()


def test_the_open_inference_protocol_reads_one_input_per_column() -> None:
    # MLServer's tabular example (content_type "pd"), and a [n, 1] shape
    body = {
        "id": "req-1",
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": "a", "datatype": "INT32", "shape": [2, 1], "data": [[10], [11]]},
            {"name": "b", "datatype": "BYTES", "shape": [2], "data": ["foo", "bär"]},
            {"name": "c", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        ],
    }
    table, request_id = payloads.read_v2(json.dumps(body).encode(), "application/json")
    assert request_id == "req-1"
    assert table.to_pydict() == {"a": [10, 11], "b": ["foo", "bär"], "c": [True, False]}
    assert table.schema.field("a").type == pa.int64()


SECRET = "4111-1111-1111-1111"  # a caller's value that no error may repeat


@pytest.mark.parametrize(
    ("body", "content_type", "status", "problem"),
    [
        (b"", "application/json", 400, "body is empty"),
        (b"{nope", "application/json", 400, "not valid JSON (line 1, column 2)"),
        (b"[1, 2]", "application/json", 400, "it is a list"),
        (b"{}", "application/json", 400, "it has no field"),
        (b'{"dataframe_split": {}, "inputs": []}', "application/json", 400, "exactly one of"),
        (b'{"x": 1}', None, 415, "has no Content-Type"),
        (b'{"x": 1}', "text/plain", 415, "text/plain is not read here"),
        (b'{"x": 1}', "application/json; charset=latin-1", 415, "Only UTF-8"),
        (
            json.dumps({"dataframe_split": {"columns": ["a"], "data": [[SECRET, 2]]}}).encode(),
            "application/json",
            400,
            "Row 0 of dataframe_split has 2 values for 1 columns",
        ),
        (
            json.dumps({"dataframe_split": {"columns": ["a"], "data": [[1], [2], 3]}}).encode(),
            "application/json",
            400,
            "Row 2 of dataframe_split has a number, not a list of values for 1 columns",
        ),
        (
            json.dumps(
                {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}}
            ).encode(),
            "application/json",
            400,
            "Row 1 of dataframe_split has 1 values for 2 columns",
        ),
        (
            json.dumps({"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}}).encode(),
            "application/json",
            400,
            "'a' is named more than once",
        ),
        (
            json.dumps({"instances": [[SECRET, 2]]}).encode(),
            "application/json",
            400,
            "Row 0 of instances has 2 values; the model takes 3 columns",
        ),
        (
            json.dumps({"inputs": {"a": [1, 2], "b": [SECRET]}}).encode(),
            "application/json",
            400,
            "one list per column, all of the same length",
        ),
        (
            json.dumps({"dataframe_records": [{"a": {"card": SECRET}}]}).encode(),
            "application/json",
            422,
            "Column 'a' holds lists or objects",
        ),
        (  # numbers and a list in one column: refused by Arrow, then named
            json.dumps(
                {"dataframe_split": {"columns": ["a"], "data": [[1], [[SECRET, 2]]]}}
            ).encode(),
            "application/json",
            422,
            "Column 'a' holds lists or objects",
        ),
        (  # lists only: Arrow makes a list column of them, which is refused the same way
            json.dumps({"inputs": {"a": [[1, 2], [3]], "b": [1, 2], "c": [1, 2]}}).encode(),
            "application/json",
            422,
            "Column 'a' holds lists or objects",
        ),
        (json.dumps({"dataframe_records": []}).encode(), "application/json", 422, "no rows"),
        (f"a,b\n{SECRET}\n".encode(), "text/csv", 400, "CSV line 2 has 1 fields for 2"),
        (b"\xff\xfe", "text/csv", 400, "not UTF-8"),
    ],
)
def test_a_malformed_body_is_refused_without_echoing_it(
    body: bytes, content_type: str | None, status: int, problem: str
) -> None:
    with pytest.raises(ModelDeckError) as refused:
        payloads.read_mlflow(body, content_type, ABC)
    assert problem in refused.value.message and refused.value.status == status
    assert refused.value.hint
    assert SECRET not in str(refused.value) and "card" not in str(refused.value)


def test_too_many_rows_are_refused() -> None:
    body = json.dumps({"inputs": {"a": list(range(11))}}).encode()
    with pytest.raises(payloads.TooManyRows, match="11 rows; at most 10") as refused:
        payloads.read_mlflow(body, "application/json", ABC, max_rows=10)
    assert refused.value.status == 413


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ([], "needs 'inputs'"),
        ([{"datatype": "FP32", "shape": [1], "data": [1]}], "Input 0 has no name"),
        ([{"name": "a", "datatype": "FP128", "shape": [1], "data": [1]}], "datatype 'FP128'"),
        ([{"name": "a", "datatype": "FP32", "shape": [3], "data": [1]}], "shape [3] for 1"),
        ([{"name": "a", "datatype": "INT64", "shape": [1], "data": ["x"]}], "does not hold"),
        (
            [
                {"name": "a", "datatype": "FP32", "shape": [1], "data": [1]},
                {"name": "b", "datatype": "FP32", "shape": [2], "data": [1, 2]},
            ],
            "different numbers of rows",
        ),
    ],
)
def test_a_malformed_inference_request_is_refused(inputs: list[object], problem: str) -> None:
    with pytest.raises((ModelDeckError, InvalidInput)) as refused:
        payloads.read_v2(json.dumps({"inputs": inputs}).encode(), "application/json")
    assert problem in refused.value.message
    assert refused.value.status in (400, 422)


def test_records_with_keys_in_any_order_or_missing_read_as_one_table() -> None:
    """Rows whose keys come in another order, or lack one, are read by name (a missing key is
    a missing value), like rows that all share one order."""
    body = {
        "dataframe_records": [
            {"a": 1, "b": 2, "c": 3},
            {"c": 6, "a": 4, "b": 5},  # another order
            {"a": 7, "c": 9},  # b missing
        ]
    }
    table = payloads.read_mlflow(json.dumps(body).encode(), "application/json", ABC)
    assert table.to_pydict() == {"a": [1, 4, 7], "b": [2, 5, None], "c": [3, 6, 9]}
