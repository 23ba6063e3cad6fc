"""Copy the phonon labels that a device call computed (tools/device/phonons.sh) into a run.

    python tools/device/merge_phonons.py DEVICE_LABELS_DB RUN

Only the phonon step's columns move (``phonon_*`` and its settings, ``phonons_settings``),
row by row, with the store's own ``update``: the run's other labels, and any row the run
wrote after the copy was taken, stay as they are. Run it while the loop is stopped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crysvcd.evaluate.store import ResultStore


def phonon_columns(row) -> dict:
    return {k: v for k, v in row.key_value_pairs.items() if k.startswith("phonon")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("device_db")
    p.add_argument("run")
    args = p.parse_args()
    source = ResultStore(Path(args.device_db)).rows()
    target = ResultStore(Path(args.run) / "labels.db")
    have = target.rows()
    moved = 0
    for key, row in source.items():
        labels = phonon_columns(row)
        if not labels or key not in have or phonon_columns(have[key]) == labels:
            continue
        # a step computed again leaves only its new outcome (as runner.record does): a
        # phonon_error the run held goes when the device brought phonon_stable, and back
        stale = {k: None for k in phonon_columns(have[key]) if k not in labels}
        target.update(key, **stale, **labels)
        moved += 1
    print(f"phonon labels copied for {moved} of {len(source)} rows into {args.run}")


if __name__ == "__main__":
    main()
