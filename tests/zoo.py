"""A zoo of awkward tables, as exports from other systems write them, generated here.

Each table has a target of one kind (int 0/1, bool, float 0.0/1.0, integer classes 1-3, text
with non-ASCII, a number for regression) and the same awkward features: yes/no, true/false and
Y/N text, a non-ASCII and a decomposed-Unicode name, missing values of every kind, an `inf`,
a constant column, an identifier, dates and very long strings. The target depends on the
features, so a model learns something and explanations have something to say.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd

DECOMPOSED = unicodedata.normalize("NFD", "échelle")  # e + U+0301, as some exporters write
COMPOSED = unicodedata.normalize("NFC", DECOMPOSED)
KEY = "loan_id"
LABELS = ("int01", "bool", "float01", "int123", "text_utf8", "regression")


def features(n_rows: int = 400, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """The feature columns (key first) and a latent score the targets are cut from."""
    rng = np.random.default_rng(seed)
    income = rng.normal(52_000, 14_000, n_rows).round(0)
    scale = rng.normal(0, 1, n_rows)
    owner = rng.choice(["yes", "no"], n_rows)
    flag = rng.choice(["true", "false"], n_rows)
    yn = rng.choice(["Y", "N"], n_rows)
    region = rng.choice(["Nord", "Süd", "Île-de-France"], n_rows)
    frame = pd.DataFrame(
        {
            KEY: [f"L{i:05d}" for i in range(n_rows)],
            "income": income,
            DECOMPOSED: scale,
            "home_owner": owner,
            "verified": flag,
            "cosigner": yn,
            "région": region,
            "constant": 1,
            "opened": np.resize(
                pd.date_range("2024-01-01", periods=30).strftime("%Y-%m-%d"), n_rows
            ),
            "note": ["x" * 300 + str(i % 7) for i in range(n_rows)],
        }
    )
    latent = (
        scale
        + 1.2 * (owner == "no")
        + 0.00004 * (income - 52_000)
        + 0.6 * (region == "Süd")
        + rng.normal(0, 0.4, n_rows)
    )
    # Holes in every kind of column, one infinite number.
    frame.loc[rng.random(n_rows) < 0.05, "income"] = np.nan
    frame.loc[rng.random(n_rows) < 0.04, "home_owner"] = None
    frame.loc[rng.random(n_rows) < 0.04, "région"] = None
    frame.loc[7, DECOMPOSED] = np.inf
    return frame, latent


def table(label: str, n_rows: int = 400, seed: int = 3) -> pd.DataFrame:
    """The features plus a target `outcome` of the kind `label` names."""
    frame, latent = features(n_rows, seed)
    high = latent > np.median(latent)
    if label == "int01":
        target = pd.Series(high.astype(int))
    elif label == "bool":
        target = pd.Series(np.where(high, "true", "false"))  # a CSV spells booleans out
    elif label == "float01":
        target = pd.Series(np.where(high, "1.0", "0.0"))
    elif label == "int123":
        target = pd.Series(np.digitize(latent, np.quantile(latent, [1 / 3, 2 / 3])) + 1)
    elif label == "text_utf8":
        target = pd.Series(np.where(high, "défaut", "remboursé"))
    elif label == "regression":
        target = pd.Series((latent * 1000).round(2))
    else:
        raise ValueError(label)
    return frame.assign(outcome=target.to_numpy())


def write_csv(frame: pd.DataFrame, path: str) -> None:
    """As an export writes it: UTF-8, a header, `inf` spelt out, blanks for missing values."""
    frame.to_csv(path, index=False, na_rep="")
