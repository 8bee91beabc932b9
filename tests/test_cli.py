"""`modeldeck`: every command in-process, JSON shapes, errors on stderr, and the real script."""

from __future__ import annotations

import io
import json
import operator
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from core import datasets
from core.cli import main as cli
from core.store import Store
from tests.cli_helpers import run, run_json
from tests.files import add_admins

State = Callable[[Store], dict[str, object]]
MODEL_FIELDS = {
    "id",
    "project",
    "experiment",
    "version",
    "algorithm",
    "task",
    "metrics",
    "created_at",
}
DATASET_FIELDS = {"id", "name", "kind", "source", "n_rows", "columns", "created_at"}


def assert_user_error(code: int, out: str, err: str, *parts: str, status: int = 2) -> None:
    """Exit status 2 (3: refused), nothing on stdout, `error:` and `hint:` lines on stderr, no
    traceback."""
    assert code == status and out == ""
    lines = err.splitlines()  # progress lines may come first
    at = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert lines[at + 1].startswith("hint: ") and lines[at + 1] != "hint: "
    assert "Traceback" not in err
    for part in parts:
        assert part in err, err


@pytest.fixture
def churn_csv(tmp_path: Path, churn_small: pd.DataFrame) -> Path:
    path = tmp_path / "churn.csv"
    churn_small.head(200).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def wine_logit() -> Any:
    frame = datasets.demo_frame("wine")
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(
        frame.drop(columns="cultivar"), frame["cultivar"]
    )


# ---------------------------------------------------------------------------- datasets
def test_datasets_add_and_list(
    capsys: pytest.CaptureFixture[str], store: Store, churn_csv: Path
) -> None:
    added = run_json(capsys, "datasets", "add", str(churn_csv))
    assert set(added) == DATASET_FIELDS
    assert (added["name"], added["kind"], added["source"]) == ("churn", "path", str(churn_csv))
    assert added["n_rows"] == 200 and added["columns"][0] == "customer_id"
    assert added["created_at"].endswith("Z")
    named = run_json(capsys, "datasets", "add", str(churn_csv), "--name", "second")
    listed = run_json(capsys, "datasets", "list")
    assert [d["id"] for d in listed] == [named["id"], added["id"]]
    code, out, _ = run(capsys, "datasets", "list")
    assert code == 0 and added["id"] in out and "200 rows" in out
    assert len(datasets.list_datasets(store)) == 2


def test_home_option_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path, churn_csv: Path
) -> None:
    other = tmp_path / "other"
    add_admins(Store.open(other))
    added = run_json(capsys, "--home", str(other), "datasets", "add", str(churn_csv))
    assert run_json(capsys, "datasets", "list", "--home", str(other)) == [added]
    assert (other / "modeldeck.duckdb").is_file()
    assert datasets.list_datasets(Store.open(home)) == []


# ---------------------------------------------------------------------------- train, models
def test_train_then_list_and_show_models(
    capsys: pytest.CaptureFixture[str], store: Store, churn_csv: Path
) -> None:
    trained = run_json(
        capsys,
        "train",
        "--dataset",
        str(churn_csv),
        "--target",
        "churn",
        "--algorithms",
        "linear,random_forest",
    )
    assert {m["algorithm"] for m in trained} == {"linear", "random_forest"}
    for model in trained:
        assert MODEL_FIELDS <= set(model)
        assert (model["project"], model["experiment"], model["version"]) == ("Default", "churn", 1)
        assert model["task"] == "binary" and model["created_at"].endswith("Z")
        assert {"accuracy", "f1", "roc_auc", "holdout_rows"} <= set(model["metrics"])

    again = run_json(
        capsys,
        "train",
        "--dataset",
        "churn",
        "--target",
        "churn",
        "--algorithms",
        "linear",
        "--exclude",
        "age",
    )
    assert again[0]["version"] == 2  # by name: the registered dataset, the same experiment

    listed = run_json(capsys, "models", "list")
    assert {m["id"] for m in listed} == {m["id"] for m in trained + again}
    by_experiment = run_json(capsys, "models", "list", "--experiment", trained[0]["experiment_id"])
    assert len(by_experiment) == 3

    shown = run_json(capsys, "models", "show", trained[0]["id"])
    assert shown["id"] == trained[0]["id"] and MODEL_FIELDS <= set(shown)
    assert shown["schema"]["key_column"] == "customer_id"
    assert "customer_id" not in [f["name"] for f in shown["schema"]["features"]]
    assert shown["artifact"]["format"] == "joblib" and len(shown["artifact"]["sha256"]) == 64
    assert set(shown["profile"]["features"]) == {f["name"] for f in shown["schema"]["features"]}

    code, out, _ = run(capsys, "models", "show", trained[0]["id"])
    assert code == 0 and "key: customer_id" in out and "target: churn" in out


def test_train_prints_progress_on_stderr(
    capsys: pytest.CaptureFixture[str], store: Store, churn_csv: Path
) -> None:
    code, out, err = run(
        capsys,
        "train",
        "--dataset",
        str(churn_csv),
        "--target",
        "churn",
        "--algorithms",
        "linear",
        "--key",
        "",
        "--task",
        "binary",
    )
    assert code == 0
    assert "Training Linear model" in err and "100% Done" in err
    assert "Default/churn v1" in out and "accuracy=" in out


def test_train_demo_dataset_by_name(capsys: pytest.CaptureFixture[str], store: Store) -> None:
    trained = run_json(
        capsys,
        "train",
        "--dataset",
        "wine",
        "--target",
        "cultivar",
        "--algorithms",
        "linear",
        "--project",
        "Wines",
        "--experiment",
        "w",
    )
    assert (trained[0]["project"], trained[0]["experiment"], trained[0]["task"]) == (
        "Wines",
        "w",
        "multiclass",
    )


# ---------------------------------------------------------------------------- import
def test_models_import_skops_and_joblib(
    capsys: pytest.CaptureFixture[str], store: Store, tmp_path: Path, wine_logit: Any
) -> None:
    skops_file = tmp_path / "wine.skops"
    skops_file.write_bytes(sio.dumps(wine_logit))
    imported = run_json(
        capsys, "models", "import", str(skops_file), "--dataset", "wine", "--target", "cultivar"
    )
    assert imported["origin"] == "imported" and imported["algorithm"] == "LogisticRegression"
    assert imported["experiment"] == "wine (imported)" and imported["task"] == "multiclass"

    pickled = tmp_path / "wine.joblib"
    buffer = io.BytesIO()
    joblib.dump(wine_logit, buffer)
    pickled.write_bytes(buffer.getvalue())
    code, out, err = run(
        capsys, "models", "import", str(pickled), "--dataset", "wine", "--target", "cultivar"
    )
    assert_user_error(
        code, out, err, "'wine.joblib' is a pickle/joblib file", "--trust-pickle", status=3
    )
    trusted = run_json(
        capsys,
        "models",
        "import",
        str(pickled),
        "--dataset",
        "wine",
        "--target",
        "cultivar",
        "--trust-pickle",
        "--experiment",
        "pickled",
    )
    assert trusted["experiment"] == "pickled"
    assert len(run_json(capsys, "models", "list")) == 2


def test_models_import_with_trusted_types(
    capsys: pytest.CaptureFixture[str], store: Store, tmp_path: Path, wine_logit: Any
) -> None:
    frame = datasets.demo_frame("wine")
    custom = make_pipeline(FunctionTransformer(operator.pos), wine_logit).fit(
        frame.drop(columns="cultivar"), frame["cultivar"]
    )
    path = tmp_path / "custom.skops"
    path.write_bytes(sio.dumps(custom))
    args = ("models", "import", str(path), "--dataset", "wine", "--target", "cultivar")
    code, out, err = run(capsys, *args)
    assert_user_error(code, out, err, "_operator.pos", "--trust-type", status=3)
    imported = run_json(capsys, *args, "--trust-type", "_operator.pos")
    shown = run_json(capsys, "models", "show", imported["id"])
    assert shown["artifact"]["trusted_types"] == ["_operator.pos"]


# ---------------------------------------------------------------------------- errors
def test_user_errors_go_to_stderr_with_status_2(
    capsys: pytest.CaptureFixture[str], store: Store, state: State, churn_csv: Path, tmp_path: Path
) -> None:
    before = state(store)
    assert_user_error(
        *run(capsys, "datasets", "add", str(tmp_path / "absent.csv")),
        "error: The file",
        "absent.csv' does not exist",
    )
    assert_user_error(
        *run(capsys, "models", "show", "mdl_nope"),
        "error: No model 'mdl_nope'.",
        "hint: Choose an existing model. `modeldeck models list` lists them.",
    )
    assert_user_error(
        *run(
            capsys,
            "models",
            "import",
            str(tmp_path / "absent.skops"),
            "--dataset",
            "wine",
            "--target",
            "cultivar",
        ),
        "does not exist",
    )
    assert_user_error(
        *run(capsys, "train", "--dataset", "nothing-here", "--target", "y"),
        "error: No dataset 'nothing-here'.",
    )
    assert state(store) == before
    dataset = run_json(capsys, "datasets", "add", str(churn_csv))
    before = state(store)
    assert_user_error(
        *run(capsys, "train", "--dataset", dataset["id"], "--target", "nope"),
        "error: The target column 'nope' is not in the dataset.",
        "hint: Available columns: customer_id, age",
    )
    assert_user_error(
        *run(
            capsys,
            "train",
            "--dataset",
            dataset["id"],
            "--target",
            "churn",
            "--algorithms",
            "linear,xgboost",
        ),
        "Unknown algorithm 'xgboost'",
    )
    assert_user_error(
        *run(
            capsys, "train", "--dataset", dataset["id"], "--target", "contract", "--task", "binary"
        ),
        "'contract' has 3 classes, not 2",
    )
    assert state(store) == before


def test_bad_arguments_exit_with_usage(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--dataset", "wine", "--target", "cultivar", "--task", "ranking"])
    assert info.value.code == 2
    assert "invalid choice: 'ranking'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the real script
@pytest.mark.slow
def test_console_script(tmp_path: Path, churn_csv: Path) -> None:
    script = Path(sys.executable).with_name("modeldeck")
    assert script.is_file(), "the venv lacks the `modeldeck` script: pip install -e ."
    home = tmp_path / "script_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDECK_")}

    def modeldeck(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), "--home", str(home), *argv],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )

    # A new workspace has no admin: the first user added (without --user) must be one.
    first = modeldeck("users", "add", "me", "--admin", "--password-stdin", stdin="me-long-pass\n")
    assert first.returncode == 0 and first.stdout == "added user me (admin)\n", first.stderr
    env["MODELDECK_USER"] = "me"

    trained = modeldeck(
        "train",
        "--dataset",
        str(churn_csv),
        "--target",
        "churn",
        "--algorithms",
        "linear",
        "--json",
    )
    assert trained.returncode == 0, trained.stderr
    assert "100% Done" in trained.stderr  # progress goes to stderr, JSON alone to stdout
    model = json.loads(trained.stdout)[0]
    assert MODEL_FIELDS <= set(model) and model["algorithm"] == "linear"
    listed = modeldeck("models", "list", "--json")
    assert [m["id"] for m in json.loads(listed.stdout)] == [model["id"]]
    failed = modeldeck("models", "show", "mdl_nope")
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.startswith("error: No model 'mdl_nope'.")
    assert "Traceback" not in failed.stderr
    assert (home / "modeldeck.duckdb").is_file()
