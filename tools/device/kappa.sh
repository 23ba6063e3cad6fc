#!/bin/bash
# On the GPU machine, from the repository root: phono3py (7net-l3i5 on the GPU) for every
# stable crystal of kappa campaign runs (tools/device/kappa_labels.py), on Dask workers.
# Here first: `SEVENNET_MODELS=SevenNet_l3i5 bash tools/device/prepare_mlip_env.sh`, and
# copy each run's labels.db and loop.json to .kap/NAME/ (git-ignored through
# .git/info/exclude). The call carries .whl and .kap, and leaves the Stage I and Stage II
# weight files out of the checkout (64 MiB).
#   bash tools/device/kappa.sh SECONDS WORKERS BUDGET NAME [NAME ...]
# e.g. `bash tools/device/kappa.sh 480 8 600 uncond_s1 campaign_s1`: the runs in turn,
# stopped after SECONDS in all (what is done is kept); $OUT gets each labels.db and the
# log. Here, copy each labels.db into a copy of its run folder and run
# `python tools/device/kappa_labels.py COPY --budget BUDGET --report`.
set -uo pipefail
SECONDS_MAX=$1
WORKERS=$2
BUDGET=$3
shift 3
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
cp -r .whl/site/* /tmp/site/
export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1
# symfc's fit and the RTA run on the CPU: share its cores among the workers
THREADS=$(( $(nproc) / WORKERS > 0 ? $(nproc) / WORKERS : 1 ))
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
END=$(( $(date +%s) + SECONDS_MAX ))
for NAME in "$@"; do
  LEFT=$(( END - $(date +%s) ))
  if [ "$LEFT" -gt 30 ]; then
    timeout -s INT -k 30 "$LEFT" python3 tools/device/kappa_labels.py ".kap/$NAME" \
      --budget "$BUDGET" --workers "$WORKERS" --device cuda >> "$OUT/kappa.log" 2>&1
    echo "$NAME: rc=$?" | tee -a "$OUT/kappa.log"
  fi
  # stopped or not: report what the database holds
  timeout 60 python3 tools/device/kappa_labels.py ".kap/$NAME" --budget "$BUDGET" --report \
    --no-figures >> "$OUT/kappa.log" 2>&1
  cp ".kap/$NAME/labels.db" "$OUT/$NAME.labels.db"
done
tail -20 "$OUT/kappa.log"
