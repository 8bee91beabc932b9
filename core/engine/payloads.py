"""Request bodies of the serving protocols read into one table of named columns.

MLflow's scoring protocol (`dataframe_split`, `dataframe_records`, `instances`, `inputs`, and
`text/csv`) and the Open Inference Protocol's tabular convention (one input per column, as
MLServer has it) both end as a pyarrow Table, which `model_input` checks against the schema and
coerces exactly as a run does: the same rows give the same predictions either way.

An error says what is wrong with the request and how to fix it, and never echoes its data.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa

from core.errors import InvalidInput, ModelDeckError

MAX_ROWS = 10_000
MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON = "application/json"
CSV = "text/csv"


class MalformedRequest(ModelDeckError):
    """A body that cannot be read as the protocol says (400)."""


class UnsupportedMediaType(ModelDeckError):
    status = 415


class TooManyRows(ModelDeckError):
    status = 413


def _json(body: bytes) -> Any:
    if not body.strip():
        raise MalformedRequest("The request body is empty.", "Send the rows to score as JSON.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(
            f"The request body is not valid JSON ({_where(exc)}).",
            'Send a JSON object, e.g. {"dataframe_split": {"columns": [...], "data": [...]}}.',
        ) from None


def _where(exc: orjson.JSONDecodeError) -> str:
    return f"line {exc.lineno}, column {exc.colno}"


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, refusing a charset other than UTF-8."""
    if not content_type:
        raise UnsupportedMediaType(
            "The request has no Content-Type.",
            f"Send Content-Type: {JSON} (or {CSV} for CSV rows).",
        )
    kind, *params = (part.strip() for part in content_type.split(";"))
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            raise UnsupportedMediaType(
                f"Only UTF-8 bodies are read, not {value.strip()}.", "Encode the body as UTF-8."
            )
    return kind.lower()


# ---------------------------------------------------------------------------- MLflow
def read_mlflow(
    body: bytes, content_type: str | None, features: Sequence[str], max_rows: int = MAX_ROWS
) -> pa.Table:
    """An MLflow scoring request as a table. Positional rows (lists without names) take the
    model's feature names in order."""
    kind = media_type(content_type)
    if kind == CSV:
        return _checked(_csv(body), max_rows)
    if kind != JSON:
        raise UnsupportedMediaType(
            f"Content-Type {kind} is not read here.", f"Send {JSON}, or {CSV} for CSV rows."
        )
    data = _json(body)
    if not isinstance(data, dict):
        raise MalformedRequest(
            f"The body must be a JSON object with exactly one of {', '.join(MLFLOW_FORMATS)};"
            f" it is a {_kind(data)}.",
            'Wrap the rows, e.g. {"dataframe_records": [{...}, ...]}.',
        )
    found = [k for k in MLFLOW_FORMATS if k in data]
    if len(found) != 1:
        given = ", ".join(sorted(map(str, data))) or "no field"
        raise MalformedRequest(
            f"The body must have exactly one of {', '.join(MLFLOW_FORMATS)}; it has {given}.",
            "Send the rows under one of those fields.",
        )
    field = found[0]
    value = data[field]
    if field == "dataframe_split":
        columns = _split(value)
    elif field == "dataframe_records":
        columns = _records(value, field)
    else:
        columns = _tensor(value, field, features)
    return _checked(_table(columns), max_rows)


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else "null"
    )


def _split(value: Any) -> dict[str, list[Any]]:
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise MalformedRequest(
            "dataframe_split must be an object with 'columns' and 'data'.",
            'E.g. {"columns": ["age", "plan"], "data": [[42, "basic"]]}.',
        )
    names = value.get("columns")
    rows = value["data"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MalformedRequest(
            "dataframe_split needs 'columns': a list of column names.",
            "Name every column of 'data', in order.",
        )
    _no_duplicates(names)
    width = len(names)
    # every row a list of `width` values, checked in C (a third of a loop's time on 1,000
    # rows); only a body that fails it is walked, to name its first wrong row
    if not (set(map(type, rows)) <= {list} and set(map(len, rows)) <= {width}):
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                raise MalformedRequest(
                    f"Row {i} of dataframe_split has {_length(row)} values for {width} columns.",
                    "Give every row one value per column, in the order of 'columns'.",
                )
    columns = zip(*rows, strict=True) if rows else ([] for _ in names)
    return {name: list(values) for name, values in zip(names, columns, strict=True)}


def _length(row: Any) -> str:
    return str(len(row)) if isinstance(row, list) else f"a {_kind(row)}, not a list of"


def _no_duplicates(names: Sequence[str]) -> None:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise MalformedRequest(
            f"Column {', '.join(repr(n) for n in twice)} is named more than once.",
            "Give each column once.",
        )


def _records(value: Any, field: str) -> dict[str, list[Any]]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise MalformedRequest(
            f"{field} must be a list of objects, one per row.", 'E.g. [{"age": 42}, {"age": 7}].'
        )
    first = list(value[0]) if value else []
    if all(list(row) == first for row in value):  # the usual: every row's keys, in one order
        columns = zip(*(row.values() for row in value), strict=True)
        return dict(zip(first, map(list, columns), strict=True))
    names = list(dict.fromkeys(name for row in value for name in row))
    return {name: [row.get(name) for row in value] for name in names}


def _tensor(value: Any, field: str, features: Sequence[str]) -> dict[str, list[Any]]:
    """`instances` / `inputs`: rows as objects, columns as an object of lists, or positional
    rows as lists in the model's feature order."""
    if isinstance(value, dict):
        lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
        if -1 in lengths or len(lengths) > 1:
            raise MalformedRequest(
                f"{field} as an object needs one list per column, all of the same length.",
                'E.g. {"age": [42, 7], "plan": ["basic", "pro"]}.',
            )
        return {str(k): list(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        return _records(value, field)
    if isinstance(value, list) and all(isinstance(r, list) for r in value):
        for i, row in enumerate(value):
            if len(row) != len(features):
                raise MalformedRequest(
                    f"Row {i} of {field} has {len(row)} values; the model takes {len(features)}"
                    " columns.",
                    "Give positional rows every feature in the model's order, or name the"
                    " columns (dataframe_split or objects).",
                )
        return {name: [row[j] for row in value] for j, name in enumerate(features)}
    raise MalformedRequest(
        f"{field} must hold rows as objects or lists, or columns as an object of lists.",
        'E.g. {"instances": [{"age": 42, "plan": "basic"}]}.',
    )


def _csv(body: bytes) -> dict[str, list[Any]]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MalformedRequest("The CSV body is not UTF-8.", "Encode it as UTF-8.") from None
    try:  # newline="": the csv module reads \r, \n and \r\n line ends itself
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise MalformedRequest(
            f"The CSV body cannot be read: {exc}.",
            "Quote fields that hold line breaks or quotes, as a spreadsheet's CSV export does.",
        ) from None
    if not rows or not any(rows[0]):
        raise MalformedRequest("The CSV body is empty.", "Send a header row, then the rows.")
    names = rows[0]
    _no_duplicates(names)
    data = rows[1:]
    for i, row in enumerate(data, start=2):
        if len(row) != len(names):
            raise MalformedRequest(
                f"CSV line {i} has {len(row)} fields for {len(names)} columns.",
                "Give every line one field per header column (quote fields holding commas).",
            )
    # Text as it came: model_input reads numbers from text by the same rule as a run's files.
    return {
        name: [row[j] if row[j] != "" else None for row in data] for j, name in enumerate(names)
    }


# ---------------------------------------------------------------------------- Open Inference
V2_TYPES = {
    "BOOL": pa.bool_(),
    "INT8": pa.int64(),
    "INT16": pa.int64(),
    "INT32": pa.int64(),
    "INT64": pa.int64(),
    "UINT8": pa.int64(),
    "UINT16": pa.int64(),
    "UINT32": pa.int64(),
    "UINT64": pa.int64(),
    "FP16": pa.float64(),
    "FP32": pa.float64(),
    "FP64": pa.float64(),
    "BYTES": pa.string(),
}


def read_v2(
    body: bytes, content_type: str | None, max_rows: int = MAX_ROWS
) -> tuple[pa.Table, Any]:
    """An Open Inference Protocol infer request with one input per column (MLServer's tabular
    convention; `parameters.content_type` "pd" accepted) as a table, and the request's id."""
    if media_type(content_type) != JSON:
        raise UnsupportedMediaType("An inference request is JSON.", f"Send Content-Type: {JSON}.")
    data = _json(body)
    inputs = data.get("inputs") if isinstance(data, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise MalformedRequest(
            "An inference request needs 'inputs': a list of tensors, one per column.",
            'E.g. {"inputs": [{"name": "age", "shape": [2], "datatype": "INT64",'
            ' "data": [42, 7]}]}.',
        )
    columns: dict[str, list[Any]] = {}
    types: dict[str, pa.DataType] = {}
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise MalformedRequest(f"Input {i} has no name.", "Name each input after its column.")
        name = tensor["name"]
        datatype = tensor.get("datatype")
        if datatype not in V2_TYPES:
            raise MalformedRequest(
                f"Input '{name}' has datatype {datatype!r}.",
                f"Use one of {', '.join(V2_TYPES)}.",
            )
        values = tensor.get("data")
        shape = tensor.get("shape")
        values = _flatten(values)
        if not isinstance(shape, list) or not shape or _product(shape) != len(values):
            raise MalformedRequest(
                f"Input '{name}' has shape {shape!r} for {len(values)} values.",
                "Give a shape whose product is the number of values, e.g. [n] or [n, 1].",
            )
        if name in columns:
            raise MalformedRequest(f"Input '{name}' is given twice.", "Give each column once.")
        columns[name] = values
        types[name] = V2_TYPES[datatype]
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise MalformedRequest(
            "The inputs have different numbers of rows.", "Give every column the same rows."
        )
    return _checked(_table(columns, types), max_rows), data.get("id")


def _flatten(values: Any) -> list[Any]:
    if not isinstance(values, list):
        return [values]
    out: list[Any] = []
    for v in values:
        out.extend(_flatten(v) if isinstance(v, list) else [v])
    return out


def _product(shape: list[Any]) -> int:
    total = 1
    for n in shape:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return -1
        total *= n
    return total


# ---------------------------------------------------------------------------- the table
def _table(columns: dict[str, list[Any]], types: dict[str, pa.DataType] | None = None) -> pa.Table:
    arrays = {}
    for name, values in columns.items():
        wanted = (types or {}).get(name)
        try:
            arrays[name] = pa.array(values, type=wanted)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            _flat(name, values)
            if wanted is not None and wanted != pa.string():
                raise InvalidInput(
                    f"Input '{name}' does not hold values of its datatype.",
                    "Make the datatype match the values, or send them as BYTES (text).",
                ) from None
            # numbers and text mixed: as text, which model_input reads by the run's rules
            arrays[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
        if pa.types.is_nested(arrays[name].type):  # lists or objects only: Arrow took them
            _flat(name, values)
    return pa.table(arrays) if arrays else pa.table({})


def _flat(name: str, values: list[Any]) -> None:
    """InvalidInput when a column holds a list or an object (checked once Arrow has refused
    the values or made a nested column of them: a scan of every cell costs more than that)."""
    if any(isinstance(v, dict | list) for v in values):
        raise InvalidInput(
            f"Column '{name}' holds lists or objects.", "Give each cell a number or text."
        )


def _checked(table: pa.Table | dict[str, list[Any]], max_rows: int) -> pa.Table:
    if isinstance(table, dict):
        table = _table(table)
    if table.num_rows == 0:
        raise InvalidInput("The request has no rows.", "Send at least one row to score.")
    if table.num_rows > max_rows:
        raise TooManyRows(
            f"The request has {table.num_rows:,} rows; at most {max_rows:,} are scored at once.",
            "Split it into smaller requests, or queue a run for a large file.",
        )
    return table
