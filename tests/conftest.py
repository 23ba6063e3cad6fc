import warnings

import pytest
import torch

from crysvcd.config import FitConfig

# One thread: CPU reductions then run in a fixed order, so the tiny models trained here
# (and the structures they sample) are the same in every run.
torch.set_num_threads(1)

warnings.filterwarnings("ignore", category=UserWarning)

TINY_STAGE2 = dict(hidden=32, n_layers=2, n_freq=8, time_dim=16, timesteps=50)
TINY_FIT2 = FitConfig(batch_size=16, lr=2e-3, ema_decay=0.9, eval_every=1, snapshots=True)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny Stage II model trained for a few epochs on small pool crystals."""
    from dataclasses import replace

    from crysvcd.config import Stage2Config
    from crysvcd.datasets import training_pool
    from crysvcd.stage2.train import train

    pool = training_pool()
    data = pool[pool["nsites"] <= 8].sample(96, random_state=0).reset_index(drop=True)
    out = tmp_path_factory.mktemp("s2")
    result = train(Stage2Config(**TINY_STAGE2), out, replace(TINY_FIT2, max_epochs=6), data=data)
    return out, result


@pytest.fixture(scope="session")
def dask_client():
    """One in-process Dask cluster (threads) for the tests that do not test processes."""
    from crysvcd.evaluate.cluster import close_client, start_client

    client = start_client(workers=1, processes=False)
    yield client
    close_client(client)
