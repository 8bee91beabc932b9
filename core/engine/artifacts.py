"""Model files: recognise a format, list what loading it would trust, load it safely.

A `.skops` file is loaded with skops' safe loader: only types we or the user trust are built.
A joblib/pickle file runs arbitrary code when loaded, so it is only opened with `trust_pickle`,
which the UI sets only after the user ticks "I trust this file".
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import skops.io as sio

from core.errors import ArtifactError, Step, UntrustedArtifact

# Types skops reports as untrusted for ordinary scikit-learn pipelines (DESIGN.md, traps).
SAFE_SKOPS_TYPES = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


@dataclass(frozen=True)
class ArtifactCheck:
    """What loading a file would take: its format and the types the user must approve."""

    format: str  # skops | joblib
    untrusted_types: tuple[str, ...]

    @property
    def runs_code(self) -> bool:
        return self.format == "joblib"


def detect_format(filename: str, data: bytes) -> str:
    """skops or joblib, from the suffix (and the zip signature); raises ArtifactError."""
    suffix = Path(filename).suffix.lower()
    if suffix == ".skops":
        return "skops"
    if suffix in PICKLE_SUFFIXES:
        return "joblib"
    if data[:4] == b"PK\x03\x04":
        return "skops"
    raise ArtifactError(
        f"'{filename}' is not a model file ModelDeck can import.",
        "Export the model with skops (.skops) or joblib (.joblib, .pkl).",
    )


def inspect_bytes(filename: str, data: bytes) -> ArtifactCheck:
    """Check a model file without loading it; raises ArtifactError for damaged skops files."""
    if not data:
        raise ArtifactError(f"'{filename}' is empty.", "Export the model again.")
    fmt = detect_format(filename, data)
    if fmt == "joblib":
        return ArtifactCheck("joblib", ())
    try:
        found = sio.get_untrusted_types(data=data)
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError) as exc:
        raise ArtifactError(
            f"'{filename}' is not a valid skops file ({exc}).",
            "It may be truncated; export it again with skops.io.dump.",
        ) from exc
    return ArtifactCheck("skops", tuple(t for t in found if t not in SAFE_SKOPS_TYPES))


def load_bytes(
    filename: str,
    data: bytes,
    *,
    trusted_types: list[str] | tuple[str, ...] = (),
    trust_pickle: bool = False,
) -> Any:
    """Load a model from bytes; raises UntrustedArtifact before running anything untrusted."""
    check = inspect_bytes(filename, data)
    if check.runs_code and not trust_pickle:
        raise UntrustedArtifact(
            f"'{filename}' is a pickle/joblib file: loading it runs any code it contains.",
            "Only import files from people you trust, then say you trust this file, "
            "or export the model with skops instead.",
            step=Step("trust-pickle", filename),
        )
    missing = [t for t in check.untrusted_types if t not in trusted_types]
    if missing:
        raise UntrustedArtifact(
            f"'{filename}' contains types that are not trusted: {', '.join(missing)}.",
            "Review them and approve them if you expect them.",
            untrusted_types=missing,
            step=Step("trust-type", filename),
        )
    try:
        if check.format == "skops":
            model = sio.load(io.BytesIO(data), trusted=[*SAFE_SKOPS_TYPES, *check.untrusted_types])
        else:
            model = joblib.load(io.BytesIO(data))
    except Exception as exc:  # unpickling can raise anything; all of it means "damaged file"
        raise ArtifactError(
            f"'{filename}' could not be loaded ({type(exc).__name__}: {exc}).",
            "The file may be truncated or damaged; export the model again.",
        ) from exc
    return require_model(model, filename)


def require_model(obj: Any, filename: str) -> Any:
    """Return `obj` if it can predict; raises ArtifactError naming what it is instead."""
    if not callable(getattr(obj, "predict", None)):
        raise ArtifactError(
            f"'{filename}' holds a {type(obj).__name__}, not a model with predict().",
            "Export the fitted scikit-learn estimator or pipeline itself.",
        )
    return obj
