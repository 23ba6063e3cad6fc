"""Fine-tuning data of the loop: the bundled pool and every labelled crystal so far, each
with a binary stability label.

A pool crystal is labelled stable when its Materials Project (DFT) energy above the hull is
at most the threshold; a generated crystal when its relaxation converged and its MLIP
energy above the hull is at most the threshold (failed, invalid and unconverged ones are
labelled unstable: the model should learn to avoid them). Labelled crystals enter as
their relaxed structures, ``labelled_weight`` times each, so that a few hundred of them
are not drowned by eleven thousand pool crystals.
"""

from __future__ import annotations

import math

import pandas as pd
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd.datasets import DEV_PERCENT, hash_bucket, training_pool

LABEL_COLUMN = "stable_label"
PROPERTY = f"stable={LABEL_COLUMN}>0.5"  # the property spec both stages are tuned on


def _cell_formula(composition) -> str:
    return "".join(f"{el.symbol}{int(round(n))}" for el, n in composition.items())


def labelled_frame(store, threshold: float) -> pd.DataFrame:
    """One row per relaxed generated crystal of the loop's database (MP-20 CSV columns)."""
    rows = []
    for key, row in store.rows().items():
        if row.get("status") != "ok" or row.natoms == 0:
            continue
        ehull = row.get("e_above_hull")
        stable = (
            ehull is not None
            and math.isfinite(ehull)
            and bool(row.get("converged"))
            and ehull <= threshold
        )
        structure = AseAtomsAdaptor.get_structure(row.toatoms())
        rows.append(
            {
                "material_id": key,
                "cif": structure.to(fmt="cif"),
                "cell_formula": _cell_formula(structure.composition),
                "pretty_formula": structure.composition.reduced_formula,
                "e_above_hull": ehull,
                LABEL_COLUMN: float(stable),
                "split": "dev" if hash_bucket(key) < DEV_PERCENT else "train",
                "source": "generated",
                "round": row.get("round"),
            }
        )
    return pd.DataFrame(rows)


def pool_frame(threshold: float) -> pd.DataFrame:
    pool = training_pool()
    pool[LABEL_COLUMN] = (pool["e_above_hull"] <= threshold).astype(float)
    return pool


def finetune_frame(
    pool: pd.DataFrame,
    labelled: pd.DataFrame,
    weight: int,
    pool_sample: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Pool (or ``pool_sample`` rows of it) and ``weight`` copies of the labelled rows."""
    if pool_sample is not None and pool_sample < len(pool):
        pool = pool.sample(pool_sample, random_state=seed)
    copies = [labelled] * weight if len(labelled) else []
    frame = pd.concat([pool, *copies], ignore_index=True)
    return frame.reset_index(drop=True)
