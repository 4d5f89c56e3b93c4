"""Dask for studies and grid searches: a cluster on this machine ('local:N') or a scheduler's address."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from fmlab.errors import ConfigError, FmlabError


@contextlib.contextmanager
def dask_client(scheduler: Any) -> Iterator[Any]:
    """A dask.distributed Client on `scheduler`: a Client (used as given), 'local:N' (N one-thread worker
    processes, started and stopped here; None means local:2) or a scheduler's address."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise FmlabError("--executor dask needs the cluster extra: pip install 'fmlab[cluster]'") from None
    if isinstance(scheduler, Client):
        yield scheduler
        return
    cluster = None
    if scheduler is None or str(scheduler).startswith("local:"):
        n = str(scheduler or "local:2").partition(":")[2]
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(f"--scheduler local:N needs a worker count, got '{scheduler}'")
        environ = dict(os.environ)
        try:  # one task per worker at a time; each trial or fit sets its own thread count
            cluster = LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True, dashboard_address=None)
        finally:  # distributed sets OMP_NUM_THREADS=1 (and MKL's) in this process: every later child would inherit it
            os.environ.clear()
            os.environ.update(environ)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=10)
        except OSError as exc:
            raise FmlabError(f"cannot reach Dask scheduler {scheduler} ({exc}); start one or use local:N") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
