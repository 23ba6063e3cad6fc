#!/bin/bash
# Here, once, from the repository root: the Python packages that the MLIP benchmarks
# (benchmarks/throughput.py --sections relax) and a loop run's phonons (benchmarks/loop.py
# phonons, on Dask workers) need on the GPU machine, which has torch, numpy, scipy, pandas,
# e3nn, torch_geometric and matplotlib but no pymatgen, ASE, SevenNet, torch-sim, phonopy or
# Dask. Writes .whl/ (git-ignored through .git/info/exclude), about 44 MB:
#   - cp312 manylinux wheels of the versions installed here;
#   - .whl/site/: SevenNet copied from this venv with only the 7net-0 weights (the wheel,
#     with all four models, would not fit the 64 MiB a device call carries; for
#     tools/device/kappa.sh, `SEVENNET_MODELS=SevenNet_l3i5` keeps 7net-l3i5's instead:
#     a kappa relabel loads no other MLIP), and two empty
#     modules for PyTables and plotly, which torch_sim.trajectory and
#     pymatgen.analysis.phase_diagram import at module level but relaxation and the hull
#     never use (together 17 MB as wheels).
# The call then carries .whl (and must leave room: the README of this folder says how) and
# starts with
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && cp -r .whl/site/* /tmp/site/ && export PYTHONPATH=/tmp/site:src
set -euo pipefail
PY=${PY:-.venv/bin/python}
SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
grep -qx "/.whl/" .git/info/exclude || echo "/.whl/" >> .git/info/exclude
rm -rf .whl && mkdir -p .whl/site
version() { $PY -c "from importlib.metadata import version; print(version('$1'))"; }
for name in ase braceexpand dill matscipy monty orjson palettable pymatgen pymatgen-core \
    ruamel.yaml spglib uncertainties vesin vesin-torch torch-sim-atomistic \
    phonopy pyyaml tqdm dask distributed cloudpickle toolz partd locket msgpack psutil \
    tornado zict tblib sortedcontainers click urllib3 h5py lxml joblib tabulate phonors \
    phono3py symfc; do
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp -d .whl "$name==$(version "$name")" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64
done
cp -r "$SITE/sevenn" "$SITE"/sevenn-*.dist-info .whl/site/
find .whl/site -name __pycache__ -prune -exec rm -rf {} +
rm -rf .whl/site/sevenn/*.so .whl/site/sevenn/pair_e3gnn
find .whl/site/sevenn/pretrained_potentials -mindepth 1 -maxdepth 1 -type d \
  ! -name "${SEVENNET_MODELS:-SevenNet_0__11Jul2024}" -exec rm -rf {} +
for mod in tables plotly; do
  mkdir -p .whl/site/$mod
  cat > .whl/site/$mod/__init__.py <<PYEOF
"""Device-run shim: imported at module level by torch-sim or pymatgen, never used by the
relaxation benchmark; left out to fit the 64 MiB a device call carries."""


class _Unused:
    def __init__(self, *a, **k):
        pass


def __getattr__(name):
    return _Unused
PYEOF
done
cp .whl/site/plotly/__init__.py .whl/site/plotly/graph_objects.py
du -sh .whl
