"""Fine-tuning data of the loop: the bundled pool and every labelled crystal so far, each
with a binary stability label; for a property campaign, also the target's bundled labelled
crystals and a binary "hit" label (``targets``), NaN where unknown (the condition is then
dropped for that row, which trains the unconditioned model).

A pool crystal is labelled stable when its Materials Project (DFT) energy above the hull is
at most the threshold; a generated crystal when its relaxation converged and its MLIP
energy above the hull is at most the threshold and, where phonons ran, it has no imaginary
modes (failed, invalid, unconverged and phonon-unstable ones are labelled unstable: the
model should learn to avoid them; the screen judges them the same way, ``kept_stable``).
Labelled crystals enter as their relaxed structures, ``labelled_weight`` times each, so
that a few hundred of them are not drowned by eleven thousand pool crystals; a bundled
row with a ``copies`` column (the paper's kappa subset) enters that many times for the same
reason. In a property campaign a generated crystal carries a hit label only when it is
stable and its property was computed, judged as the campaign judges it
(``figures.property_hits``): a metal's epsilon or a kappa with imaginary modes is a miss,
as in the property screen.
"""

from __future__ import annotations

import math

import pandas as pd
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd.datasets import DEV_PERCENT, composition_formula, hash_bucket, training_pool
from crysvcd.loop.figures import property_hits
from crysvcd.loop.targets import HIT_COLUMN, Target

LABEL_COLUMN = "stable_label"


def labelled_frame(store, threshold: float, target: Target | None = None) -> pd.DataFrame:
    """One row per relaxed generated crystal of the loop's database (MP-20 CSV columns)."""
    rows = []
    label = target.label if target is not None else None
    for key, row in store.rows().items():
        if row.get("status") != "ok" or row.natoms == 0:
            continue
        ehull = row.get("e_above_hull")
        phonons = row.get("phonon_stable")  # None where phonons did not run
        stable = (
            ehull is not None
            and math.isfinite(ehull)
            and bool(row.get("converged"))
            and ehull <= threshold
            and (phonons is None or bool(phonons))
        )
        structure = AseAtomsAdaptor.get_structure(row.toatoms())
        rows.append(
            {
                "material_id": key,
                "cif": structure.to(fmt="cif"),
                "cell_formula": composition_formula(structure.composition),
                "pretty_formula": structure.composition.reduced_formula,
                "e_above_hull": ehull,
                LABEL_COLUMN: float(stable),
                "split": "dev" if hash_bucket(key) < DEV_PERCENT else "train",
                "source": "generated",
                "round": row.get("round"),
                # what the hit label is judged from (figures.property_hits), then dropped;
                # Stage I's kind (alloy) is not in the database, so an alloy's epsilon is
                # judged by the metal flag alone (dielectric campaigns make ionic ones only)
                **{k: row.get(k) for k in (label, "kappa_reliable") if k},
            }
        )
    frame = pd.DataFrame(rows)
    if not label or frame.empty:
        return frame.assign(**{HIT_COLUMN: math.nan})
    hit = property_hits(frame, target).where(frame[LABEL_COLUMN] == 1)
    return frame.assign(**{HIT_COLUMN: hit}).drop(columns=[label, "kappa_reliable"])


def pool_frame(threshold: float, target: Target | None = None) -> pd.DataFrame:
    """The pool with its DFT stability label; for a property target, its bundled labelled
    crystals added (their stability label unknown)."""
    pool = training_pool()
    pool[LABEL_COLUMN] = (pool["e_above_hull"] <= threshold).astype(float)
    pool[HIT_COLUMN] = math.nan
    if target is None or target.label is None:
        return pool
    bundled = target.bundled().assign(**{LABEL_COLUMN: math.nan})
    return pd.concat([pool, bundled], ignore_index=True)


def finetune_frame(
    pool: pd.DataFrame,
    labelled: pd.DataFrame,
    weight: int,
    pool_sample: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Pool (or ``pool_sample`` rows of it; a property target's labelled rows always kept)
    and the labelled rows, each row as many times as its weight: ``weight`` for a labelled
    row, ``copies`` for a bundled one that has it, else once."""
    if pool_sample is not None and pool_sample < len(pool):
        plain = pool[pool[HIT_COLUMN].isna()]
        plain = plain.sample(min(pool_sample, len(plain)), random_state=seed)
        pool = pd.concat([_weighted(pool[pool[HIT_COLUMN].notna()]), plain])
    else:
        pool = _weighted(pool)
    frame = pd.concat([pool, _weighted(labelled.assign(copies=weight))], ignore_index=True)
    return frame.drop(columns="copies", errors="ignore")


def _weighted(frame: pd.DataFrame) -> pd.DataFrame:
    """Each row ``copies`` times (1 where unset), whole copies of the frame one after the
    other: the order a repeated block had."""
    if "copies" not in frame or not len(frame):
        return frame
    n = frame["copies"].fillna(1).astype(int)
    return pd.concat([frame[n > c] for c in range(int(n.max()))])
