#!/bin/bash
# On the GPU machine, from the repository root: the paper's phonon check (benchmarks/loop.py
# phonons) of a loop run's crystals, on Dask workers that each hold SevenNet on the GPU.
# Here first: `bash tools/device/prepare_mlip_env.sh`, and copy the run's labels.db and
# loop.json to .phon/run/ (git-ignored through .git/info/exclude). The call carries .whl
# and .phon, and leaves the Stage I and Stage II weight files out of the checkout (64 MiB).
#   bash tools/device/phonons.sh ROUNDS [SECONDS] [WORKERS]
# e.g. `bash tools/device/phonons.sh "0" 420 8`: phonons for every converged crystal of
# round 0 under 0.1 eV/atom, stopped after SECONDS (what is done is kept); $OUT gets the
# updated labels.db and the log. Here, copy the phonon columns back into the run
# (tools/device/merge_phonons.py).
set -uo pipefail
ROUNDS=$1
SECONDS_MAX=${2:-420}
WORKERS=${3:-8}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
cp -r .whl/site/* /tmp/site/
export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
# shellcheck disable=SC2086  # ROUNDS is a list of round numbers
timeout -s INT -k 30 "$SECONDS_MAX" python3 benchmarks/loop.py phonons .phon/run --per-round 10000 \
  --rounds $ROUNDS --workers "$WORKERS" --device cuda --no-figures --timeout 240 \
  > "$OUT/phonons.log" 2>&1
echo "phonons rc=$?"
# the driver may have been stopped by the timeout: report what the database holds
timeout 60 python3 benchmarks/loop.py phonons .phon/run --per-round 10000 --rounds $ROUNDS \
  --report --no-figures >> "$OUT/phonons.log" 2>&1
cp .phon/run/labels.db "$OUT/labels.db"
tail -5 "$OUT/phonons.log"
