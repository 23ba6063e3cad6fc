"""Per-round numbers and figures of a loop run (the paper's Fig. 3b and 3c).

- ``RUN/structures.csv``: one row per generated crystal and its labels, with its round;
- ``RUN/shares.csv``: per round, the shares (with Wilson 95 % intervals) of Ehull < 0.1
  and < 0 eV/atom, phonon-stable, valid, unique, novel against the pool, and stable,
  unique and novel (S.U.N.);
- ``RUN/figures/ehull.png``: energy above the hull per round, beside the training pool's
  DFT values; ``RUN/figures/phonon_min_frequency.png``: lowest phonon frequency per round.

Shares are over all generated crystals of the round: a crystal that is invalid, or whose
relaxation failed or did not converge, counts as not stable. The phonon share is over the
crystals that got phonons (below ``phonon_ehull_max``, sampled by ``phonon_share``).
Novelty and uniqueness are judged on the relaxed structures (``metrics``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd import metrics
from crysvcd.runinfo import atomic_write_text

STABLE = 0.1  # eV/atom, the paper's "within 0.1 eV/atom of the hull"


def structure_table(out_dir: Path, store) -> pd.DataFrame:
    """Generated crystals (from each round's summary.csv) joined with their labels; the
    pool match of each relaxed structure is computed once and stored in the database."""
    frames = []
    for summary in sorted(out_dir.glob("round_*/generated/summary.csv")):
        r = int(summary.parent.parent.name.split("_")[1])
        df = pd.read_csv(summary, keep_default_na=False)
        df["round"] = r
        df["key"] = [f"r{r:02d}/{Path(f).stem}" if f else "" for f in df["file"]]
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    gen = pd.concat(frames, ignore_index=True)
    rows = store.rows()
    labels, relaxed = [], {}
    for key in gen["key"]:
        row = rows.get(key)
        if row is None:
            labels.append({})
            continue
        kv = dict(row.key_value_pairs)
        if kv.get("status") == "ok" and row.natoms:
            structure = AseAtomsAdaptor.get_structure(row.toatoms())
            relaxed[key] = structure
            if "known_match_relaxed" not in kv:
                kv["known_match_relaxed"] = metrics.known_match(structure)
                store.update(key, known_match_relaxed=kv["known_match_relaxed"])
        labels.append({f"label_{k}" if k in gen.columns else k: v for k, v in kv.items()})
    table = pd.concat([gen, pd.DataFrame(labels)], axis=1)
    unique = []
    for _r, part in table.groupby("round", sort=True):
        flags = metrics.unique_flags([relaxed.get(k) for k in part["key"]])
        unique.extend(zip(part.index, flags))
    table["unique"] = pd.Series(dict(unique))
    return table


def _col(table: pd.DataFrame, name: str, fill=np.nan) -> pd.Series:
    """A column, or ``fill`` everywhere when no row has it yet."""
    return table[name] if name in table else pd.Series(fill, index=table.index)


def _flag(series: pd.Series) -> pd.Series:
    return series.astype(str).str.lower().isin(("true", "1", "1.0"))


def round_shares(table: pd.DataFrame) -> pd.DataFrame:
    out = []
    for r, part in table.groupby("round", sort=True):
        ehull = pd.to_numeric(part.get("e_above_hull"), errors="coerce")
        converged = _flag(part.get("converged", pd.Series(False, index=part.index)))
        ok = part.get("status", pd.Series("", index=part.index)) == "ok"
        valid = _flag(part["valid"])
        stable = ok & converged & (ehull < STABLE)
        novel = ok & (
            part.get("known_match_relaxed", pd.Series("", index=part.index)).fillna("") == ""
        )
        unique = part["unique"].fillna(False).astype(bool)
        has_phonon = part.get("phonon_stable", pd.Series(np.nan, index=part.index)).notna()
        phonon_ok = _flag(part.get("phonon_stable", pd.Series(False, index=part.index)))
        shares = {
            "ehull_below_0.1": stable,
            "ehull_below_0": ok & converged & (ehull < 0),
            "phonon_stable": phonon_ok[has_phonon],
            "valid": valid,
            "unique": unique,
            "novel": novel,
            "sun": stable & unique & novel,
        }
        rec = {"round": r, "generated": len(part), "labelled": int(ok.sum())}
        for name, flags in shares.items():
            s = metrics.share(list(flags))
            rec[name] = s["share"]
            rec[f"{name}_lo"], rec[f"{name}_hi"], rec[f"{name}_n"] = s["lo"], s["hi"], s["n"]
        rec["ehull_median"] = float(np.nanmedian(ehull[ok])) if ok.any() else math.nan
        out.append(rec)
    return pd.DataFrame(out)


def histogram(
    series: dict[str, np.ndarray], path: Path, title: str, xlabel: str, bins: np.ndarray,
    mark: float, density: bool = False,
) -> None:  # fmt: skip
    """Overlaid step histograms (values clipped to the bins), one per label, a dashed line
    at ``mark``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, values in series.items():
        v = np.asarray(values, dtype=float)
        v = np.clip(v[np.isfinite(v)], bins[0], bins[-1])
        if len(v):
            ax.hist(v, bins=bins, histtype="step", density=density, lw=1.6,
                    label=f"{label} (n={len(v)})")  # fmt: skip
    ax.axvline(mark, color="grey", ls="--", lw=1)
    ax.set_xlabel(f"{xlabel}; clipped to [{bins[0]:g}, {bins[-1]:g}]")
    ax.set_ylabel("density" if density else "crystals")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def ehull_histogram(series: dict[str, np.ndarray], path: Path, title: str) -> None:
    """Energy above the hull (the paper's Fig. 3b), densities, dashed at 0.1 eV/atom."""
    histogram(series, path, title, "energy above the MP hull (eV/atom)",
              np.linspace(-0.3, 1.0, 53), STABLE, density=True)  # fmt: skip


def frequency_histogram(series: dict[str, np.ndarray], path: Path, title: str) -> None:
    """Lowest phonon frequency (Fig. 3c), counts, dashed at the -0.01 THz threshold."""
    histogram(series, path, title, "lowest phonon frequency (THz; negative = imaginary)",
              np.linspace(-3, 3, 49), -0.01)  # fmt: skip


def write_figures(out_dir: Path, store, cfg) -> pd.DataFrame:
    from crysvcd.loop.data import pool_frame

    table = structure_table(out_dir, store)
    if table.empty:
        return pd.DataFrame()
    atomic_write_text(out_dir / "structures.csv", table.to_csv(index=False))
    shares = round_shares(table)
    atomic_write_text(out_dir / "shares.csv", shares.to_csv(index=False))
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    ehull = pd.to_numeric(_col(table, "e_above_hull"), errors="coerce")
    series = {
        f"round {r}": ehull[table["round"] == r].to_numpy() for r in sorted(table["round"].unique())
    }
    series["training pool (MP, DFT)"] = pool_frame(0.0)["e_above_hull"].to_numpy()
    ehull_histogram(series, figures / "ehull.png", f"{out_dir.name}: {cfg.mlip} Ehull by round")
    if "phonon_min_frequency_thz" in table:
        freq = pd.to_numeric(table["phonon_min_frequency_thz"], errors="coerce")
        fseries = {
            f"round {r}": freq[table["round"] == r].to_numpy()
            for r in sorted(table["round"].unique())
        }
        frequency_histogram(fseries, figures / "phonon_min_frequency.png",
                            f"{out_dir.name}: lowest phonon frequency by round")  # fmt: skip
    return shares
