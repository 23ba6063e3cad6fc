"""Label a whole table of formulas and summarise the coverage."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from crysvcd.chem.valence import label_valence


def label_formulas(formulas: list[str]) -> pd.DataFrame:
    """One row per formula: kind, tokens (``Fe2+x1 Fe3+x2 O2-x4``) and the error, if any."""
    rows = []
    for formula in formulas:
        try:
            a = label_valence(formula)
            rows.append({"kind": a.kind, "tokens": str(a), "error": ""})
        except ValueError as exc:
            rows.append({"kind": "", "tokens": "", "error": str(exc)})
    return pd.DataFrame(rows)


def coverage(labels: pd.DataFrame, top: int = 20) -> dict[str, object]:
    """Overall and per-kind counts, and the most common failures."""
    n = len(labels)
    ok = labels["error"] == ""
    kinds = Counter(labels.loc[ok, "kind"])
    fails = Counter(labels.loc[~ok, "error"])
    return {
        "rows": n,
        "labelled": int(ok.sum()),
        "coverage": float(ok.mean()) if n else 0.0,
        "ionic": kinds.get("ionic", 0),
        "alloy": kinds.get("alloy", 0),
        "top_failures": fails.most_common(top),
    }


def label_csv(path: str | Path, column: str, out: str | Path) -> dict[str, object]:
    """Label ``column`` of a CSV, write it with kind/tokens/error columns, return the coverage."""
    df = pd.read_csv(path)
    if column not in df.columns:
        raise ValueError(f"{path}: no column {column!r} (columns: {list(df.columns)})")
    labels = label_formulas([str(f) for f in df[column]])
    result = pd.concat([df.reset_index(drop=True), labels], axis=1)
    result.to_csv(out, index=False)
    summary = coverage(labels)
    summary["top_failures"] = "; ".join(f"{e} ({k})" for e, k in summary["top_failures"][:5])
    return summary
