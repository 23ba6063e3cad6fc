"""Run one MLIP task per structure across worker processes.

The MLIP backends take one structure per call, so many structures are spread over
processes, each with its own calculator and one thread. Measured on 2 cores (12 MP-20
structures, benchmarks/stability.py --sections speed): 9.7 structures/min with 2 workers
against 11.2 for one process with 2 threads, since each worker loads its own model: it
pays off only with more cores or long runs.
Results come back as they finish, so a caller can store each one at once and a killed run
loses nothing that finished.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from crysvcd.evaluate.mlip import get_calculator

_WORKER_CALC: dict[str, Any] = {}


def _init_worker(mlip: str, model_path: str | None) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER_CALC["calc"] = get_calculator(mlip, model_path)


def _call(fn: Callable, item: Any) -> Any:
    try:
        return fn(item, _WORKER_CALC["calc"])
    except Exception as exc:  # returned, so that one bad structure cannot stop the others
        return exc


def map_structures(
    fn: Callable[[Any, Any], Any],
    items: list,
    mlip: str,
    model_path: str | None = None,
    workers: int = 1,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, fn(item, calculator))`` as each finishes; an exception is yielded as the
    result. ``fn`` must be a module-level function (it is pickled to the workers)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(items) <= 1:
        calc = get_calculator(mlip, model_path)
        for i, item in enumerate(items):
            try:
                yield i, fn(item, calc)
            except Exception as exc:
                yield i, exc
        return
    get_calculator(mlip, model_path)  # a missing backend fails here, clearly, not in a worker
    # spawn: torch and forked OpenMP thread pools do not mix
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(mlip, model_path)
    ) as pool:
        pending = {pool.submit(_call, fn, item): i for i, item in enumerate(items)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()
