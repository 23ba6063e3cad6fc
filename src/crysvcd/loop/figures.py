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


def kept_stable(table: pd.DataFrame, threshold: float = STABLE) -> pd.Series:
    """What a campaign keeps, and the label its fine-tunes learn (``loop.data``): relaxed,
    converged, Ehull at most ``threshold`` (0.1 eV/atom), and not phonon-unstable where
    phonons ran."""
    ehull = pd.to_numeric(_col(table, "e_above_hull"), errors="coerce")
    stable = (_col(table, "status", "") == "ok") & _flag(_col(table, "converged", False))
    phonon = _col(table, "phonon_stable")
    return stable & (ehull <= threshold) & ~(phonon.notna() & ~_flag(phonon))


def round_shares(table: pd.DataFrame, target=None) -> pd.DataFrame:
    """Shares per round; with a property ``target`` also ``target_hit``: of the stable
    crystals (Ehull < 0.1, and phonon-stable where phonons ran) whose property was
    computed, the share that hit the target (``target_hit_of_stable``: over all stable ones,
    an uncomputed property counting as a miss)."""
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
        if target is not None and target.label is not None:
            value = usable_values(part, target)
            kept = kept_stable(part)
            hit = pd.Series(target.hit(value), index=part.index) == 1
            shares["target_hit"] = hit[kept & value.notna()]
            shares["target_hit_of_stable"] = hit[kept]
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
    target = cfg.target_spec()
    shares = round_shares(table, target)
    atomic_write_text(out_dir / "shares.csv", shares.to_csv(index=False))
    if target.label is not None:
        write_candidates(out_dir, store, table, target)
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
    if target.label is not None and target.label in table:
        value = pd.to_numeric(table[target.label], errors="coerce")
        pseries = {"training set": target.bundled()["target_value"].to_numpy()}
        for r in sorted(table["round"].unique()):
            pseries[f"round {r}"] = value[table["round"] == r].to_numpy()
        property_histogram(pseries, target, figures / f"{target.name}.png",
                           f"{out_dir.name}: {target.label} by round")  # fmt: skip
    return shares


def usable_values(table: pd.DataFrame, target) -> pd.Series:
    """The target property of each row where it means something: a kappa with imaginary
    modes is not (they drop out of the RTA sum), nor is a dielectric constant of a metal (it
    diverges, whatever the surrogate, trained on insulators, says): an alloy, or a formula
    the metal flag calls a metal (``evaluate.gap``)."""
    value = pd.to_numeric(_col(table, target.label), errors="coerce")
    if target.name == "kappa":
        value = value.where(_flag(_col(table, "kappa_reliable", False)))
    if target.name == "dielectric":
        value = value.where((_col(table, "kind", "") != "alloy") & ~likely_metal(table))
    return value


def property_hits(table: pd.DataFrame, target) -> pd.Series:
    """Each row's hit label for a property ``target``, stability aside: 1.0 or 0.0 by a
    usable value (``usable_values``); 0.0 where a value was computed but is not usable (a
    metal's epsilon, a kappa with imaginary modes: not what a campaign looks for); NaN where
    none was computed. The screen and the fine-tunes both learn from it (``loop.run``,
    ``loop.data``), each with its own rule for unstable crystals."""
    usable = usable_values(table, target)
    computed = pd.to_numeric(_col(table, target.label), errors="coerce").notna()
    hit = pd.Series(target.hit(usable), index=table.index, dtype=float)
    return hit.where(~(computed & usable.isna()), 0.0)


def likely_metal(table: pd.DataFrame, below: float | None = None) -> pd.Series:
    """Rows whose formula the metal flag calls a metal (``evaluate.gap.likely_metal``, at
    P(gapped) ``below``, default its own cut)."""
    from crysvcd.evaluate import gap

    formulas = _col(table, "cell_formula", "").fillna("")
    below = gap.METAL_BELOW if below is None else below
    return pd.Series(gap.likely_metal(formulas, below), index=table.index)


def property_histogram(series: dict, target, path: Path, title: str) -> None:
    """The target property (log10), densities, dashed at the target's threshold (Fig. 4b
    and 4e of the paper)."""
    logs = {k: np.log10(np.clip(np.asarray(v, dtype=float), 1e-3, None)) for k, v in series.items()}
    unit = "W/mK" if target.name == "kappa" else "total epsilon"
    # kappa spans 0.01-1000 W/mK; epsilon 1-1000
    bins = np.linspace(-2, 3, 51) if target.name == "kappa" else np.linspace(0, 3, 46)
    histogram(logs, path, title, f"log10 {target.label} ({unit})", bins,
              float(np.log10(target.threshold())), density=True)  # fmt: skip


CANDIDATE_COLUMNS = [
    "rank", "key", "round", "formula", "space_group", "n_atoms", "e_above_hull", "converged",
    "phonon_stable", "phonon_min_frequency_thz", "kappa_surrogate", "kappa_slack", "value",
    "hit", "reliable",
    "flags", "cif",
]  # fmt: skip


def write_candidates(out_dir: Path, store, table: pd.DataFrame, target, top: int = 20) -> None:
    """``RUN/candidates.csv``: every relaxed crystal, stable ones first, ranked by the target
    property, with the labels' reliability flags; the CIFs of the ``top`` in
    ``RUN/candidates/``."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    rows, structures = store.rows(), {}
    records = []
    kept = kept_stable(table)
    for i, row in table[_col(table, "status", "") == "ok"].iterrows():
        db = rows.get(row["key"])
        if db is None or not db.natoms:
            continue
        structure = AseAtomsAdaptor.get_structure(db.toatoms())
        structures[row["key"]] = structure
        try:
            sg = SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_symbol()
        except Exception:
            sg = ""
        value = usable_values(pd.DataFrame([row]), target).iloc[0]
        flags = []
        if target.name == "dielectric" and row.get("kind") == "alloy":
            flags.append(f"{target.label} not usable: alloy (metallic)")
        elif target.name == "dielectric" and likely_metal(pd.DataFrame([row])).iloc[0]:
            from crysvcd.evaluate import gap

            flags.append(f"{target.label} not usable: {gap.why_metal(row['cell_formula'])} "
                         f"(surrogate {row.get(target.label, float('nan')):.3g})")  # fmt: skip
        raw = pd.to_numeric(pd.Series([row.get("kappa")]), errors="coerce")[0]
        if target.name == "kappa" and pd.notna(raw) and pd.isna(value):
            flags.append(f"kappa not usable: imaginary modes in phono3py's phonons (min "
                         f"{row.get('kappa_min_frequency', float('nan')):.2f} THz; "
                         f"computed {raw:.3g} W/mK)")  # fmt: skip
        flags += [
            f"{name}: {row[name]}"
            for name in ("ehull_unreliable", "kappa_skipped", "kappa_error", "dielectric_error",
                         "phonon_skipped", "phonon_note")
            if name in row and pd.notna(row[name]) and str(row[name]) not in ("", "False")
        ]  # fmt: skip
        reliable = pd.notna(value)
        ehull = pd.to_numeric(pd.Series([row.get("e_above_hull")]), errors="coerce")[0]
        phonon = row.get("phonon_stable")
        records.append({
            "key": row["key"], "round": row["round"],
            "formula": structure.composition.reduced_formula,
            "space_group": sg, "n_atoms": len(structure), "e_above_hull": ehull,
            "converged": row.get("converged"), "phonon_stable": phonon,
            "phonon_min_frequency_thz": row.get("phonon_min_frequency_thz"),
            "kappa_surrogate": row.get("kappa_surrogate"),
            "kappa_slack": row.get("kappa_slack"), "value": value,
            "hit": bool(target.hit([value])[0] == 1) if pd.notna(value) else None,
            "reliable": reliable, "flags": "; ".join(flags),
            "_stable": bool(kept[i]),
        })  # fmt: skip
    if not records:
        return
    cand = pd.DataFrame(records)
    order = -cand["value"] if target.direction == "high" else cand["value"]
    cand = cand.assign(_order=order.fillna(np.inf))
    cand = cand.sort_values(["_stable", "_order"], ascending=[False, True]).reset_index(drop=True)
    cand["rank"] = np.arange(1, len(cand) + 1)
    folder = out_dir / "candidates"
    folder.mkdir(exist_ok=True)
    cand["cif"] = ""
    for i in range(min(top, len(cand))):
        name = f"{i + 1:03d}_{cand.at[i, 'formula']}.cif"
        atomic_write_text(folder / name, structures[cand.at[i, "key"]].to(fmt="cif"))
        cand.at[i, "cif"] = f"candidates/{name}"
    atomic_write_text(out_dir / "candidates.csv", cand[CANDIDATE_COLUMNS].to_csv(index=False))
