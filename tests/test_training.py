"""The one training loop: resume, determinism, devices, DDP (gloo), checkpoint errors."""

import logging
import os
import socket
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from crysvcd import checkpoints
from crysvcd.config import FitConfig
from crysvcd.training import TensorData, fit, resolve_device


class Tiny(nn.Module):
    """A model with the two attributes every crysvcd model has (cfg, properties)."""

    class Cfg:
        def to_dict(self):
            return {"width": 8}

    def __init__(self):
        super().__init__()
        self.cfg, self.properties = self.Cfg(), []
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def _data(n=96):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TensorData((x, x.sum(1).sin()))


def _loss(net, batch, gen):
    x, y = batch
    noisy = x + 0.01 * torch.randn(x.shape, generator=gen, device=x.device)
    return ((net(noisy) - y) ** 2).mean(), {}


def _eval(data):
    def evaluate(model, device):
        x, y = data.batch(torch.arange(len(data)), device)
        return {"dev_loss": ((model(x) - y) ** 2).mean().item()}

    return evaluate


CFG = FitConfig(batch_size=16, lr=1e-2, max_epochs=6, ema_decay=0.9, device="cpu")


def _train(out, cfg):
    torch.manual_seed(0)
    data = _data()
    return fit(Tiny(), _loss, data, _eval(data), cfg, out)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import crysvcd.training as training

    whole = _train(tmp_path / "whole", CFG)
    real_log = training.log_epoch

    def killed_after_epoch_3(folder, rec):
        real_log(folder, rec)
        if rec["epoch"] == 3:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(training, "log_epoch", killed_after_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "cut", CFG)
    monkeypatch.setattr(training, "log_epoch", real_log)
    resumed = _train(tmp_path / "cut", CFG)
    assert resumed.steps == whole.steps == 6 * 6 and resumed.epochs == 6
    a = torch.load(whole.last_path, weights_only=False)
    b = torch.load(resumed.last_path, weights_only=False)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k])
        torch.testing.assert_close(a["ema"][k], b["ema"][k])
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]


def test_cuda_asked_for_but_absent_falls_back_with_a_message(caplog):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.WARNING, logger="crysvcd.training"):
        assert resolve_device("cuda") == torch.device("cpu")
    assert "CUDA is not available" in caplog.text
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_bad_fit_values_are_refused():
    bad_values = (
        ({"max_epochs": -1}, "max_epochs"), ({"lr": 0}, "lr"),
        ({"precision": "fp8"}, "precision"), ({"ema_decay": 1.5}, "ema"),
    )  # fmt: skip
    for bad, message in bad_values:
        with pytest.raises(ValueError, match=message):
            FitConfig(**bad)


def test_corrupt_or_foreign_checkpoints_give_clear_errors(tmp_path):
    from crysvcd.stage1.model import load_model as load_stage1
    from crysvcd.stage2.cspnet import load_model as load_stage2

    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoints.CheckpointError, match="not a readable checkpoint"):
        load_stage2(broken)
    with pytest.raises(checkpoints.CheckpointError, match="another model"):
        load_stage2(checkpoints.shipped("dielectric"))
    with pytest.raises(checkpoints.CheckpointError, match="another model"):
        load_stage1(checkpoints.shipped("stage2"))
    with pytest.raises(FileNotFoundError, match="no Stage II checkpoint"):
        load_stage2(tmp_path / "missing.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = _data()
    model = Tiny()
    fit(model, _loss, data, _eval(data), replace(CFG, max_epochs=2), out)
    torch.save(model.state_dict(), f"{out}/rank{rank}.pt")


def test_two_gloo_processes_end_with_the_same_weights(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    run = (tmp_path / "run.json").read_text()
    assert '"world_size": 2' in run  # rank 0 wrote the record
    assert (tmp_path / "last.pt").exists()
