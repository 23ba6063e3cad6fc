import warnings

import pytest

warnings.filterwarnings("ignore", category=UserWarning)

TINY_STAGE2 = dict(
    hidden=32, n_layers=2, n_freq=8, time_dim=16, timesteps=50, batch_size=16, eval_every=1, lr=2e-3
)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny Stage II model trained for a few epochs on small pool crystals."""
    from crysvcd.config import Stage2Config
    from crysvcd.datasets import training_pool
    from crysvcd.stage2.train import train

    pool = training_pool()
    data = pool[pool["nsites"] <= 8].sample(96, random_state=0).reset_index(drop=True)
    out = tmp_path_factory.mktemp("s2")
    result = train(Stage2Config(**TINY_STAGE2, max_epochs=6), out, data=data, log=lambda *_: None)
    return out, result
