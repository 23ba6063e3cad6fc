"""Fan labelling out over Dask distributed.

By default a ``LocalCluster`` with one single-threaded worker process per requested
worker; ``scheduler="tcp://host:8786"`` attaches to a running cluster instead (for SLURM,
start one with dask-jobqueue: docs/CLUSTER.md). Each worker process loads its MLIP once
(``mlip.get_calculator`` caches it per process) and keeps it for every task it runs.

A worker that dies on a structure (``kill -9``, out of memory) has its task retried on
another worker; after ``allowed-failures`` deaths Dask gives up on that task alone with
``KilledWorker``, which the caller records as that structure's error while the others go
on.
"""

from __future__ import annotations

import logging

from distributed import Client, LocalCluster, WorkerPlugin


class OneThread(WorkerPlugin):
    """Torch (and its OpenMP pool) on one thread per worker: workers share the cores."""

    def setup(self, worker) -> None:
        import torch

        torch.set_num_threads(1)


def start_client(workers: int = 1, scheduler: str | None = None, processes: bool = True) -> Client:
    """A Dask client: attached to ``scheduler``, or on a new local cluster of ``workers``
    single-threaded processes (``processes=False``: threads of this process, for tests)."""
    if scheduler:
        client = Client(scheduler, timeout="30s")
    else:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        extra = {"env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}} if processes else {}
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            **extra,
        )
        client = Client(cluster)
    if processes or scheduler:
        client.register_plugin(OneThread())
    return client


def close_client(client: Client) -> None:
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()
