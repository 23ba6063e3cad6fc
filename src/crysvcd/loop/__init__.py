"""The concurrent learning loop: generate -> label on Dask -> fine-tune, by rounds."""

from crysvcd.loop.config import LoopConfig

__all__ = ["LoopConfig", "run_loop"]


def __getattr__(name: str):
    if name == "run_loop":
        from crysvcd.loop.run import run_loop

        return run_loop
    raise AttributeError(name)
