"""A Dask cluster of two repeatr workers sharing only an nginx ``ca+http`` warehouse.

Everything lives in one tmpfs (``tests.rootfs.session_rootfs``): the busybox
rootfs, nginx's root and config, each worker's state dir and Dask scratch
dir, the client's state. The busybox rootfs is packed into the warehouse
once; every formula's ``/`` is that ware.

Workers: ``w1`` offers ns, chroot and runc; ``w2`` only ns and chroot
(``--repeatr-executors``), so a run asking for runc can only go to ``w1``.
The cluster is torn down at the end of the module (every process SIGKILLed,
sessions waited for); then nothing of it may be left: no process, no mount
under the tmpfs but the tmpfs itself.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from repeatr.distributed.client import DaskRun
from repeatr.fileset.pack import pack_dir
from repeatr.graph.model import Graph, GraphEvents, GraphOutcome
from repeatr.model.filters import Filters
from repeatr.runner.batch import BatchOptions
from repeatr.runner.run import RunOptions
from repeatr.warehouse import warehouse_for
from tests.distributed.cluster import Cluster, session_pids
from tests.distributed.graphs import run_locally, twelve_steps, ware_ids
from tests.rootfs import ScratchArea, mountinfo, session_rootfs
from tests.warehouse.nginx import Nginx, start_nginx


@dataclass
class DaskEnv:
    area: ScratchArea
    nginx: Nginx
    cluster: Cluster
    #: The warehouse every worker reads and writes.
    warehouse: str
    #: The busybox rootfs, packed into ``warehouse``.
    base: str
    #: Worker name -> its state dir (``REPEATR_CACHE``).
    states: dict[str, Path]
    #: Worker name -> its address.
    addresses: dict[str, str]

    def refresh_addresses(self) -> None:
        """After a worker was restarted (its nanny starts a new one, on a new port)."""
        self.addresses = self.cluster.wait_for_workers(list(self.states))


@pytest.fixture(scope="package")
def dask_env() -> Iterator[DaskEnv]:
    if os.geteuid() != 0:
        pytest.fail("Dask tests need root (real namespaces and mounts)")
    with session_rootfs() as area:
        www = area.base / "www"
        (www / "dav").mkdir(parents=True)  # nginx's /dav/ location: WebDAV writes
        nginx = start_nginx(area.base / "nginx", www)
        cluster = Cluster(area.base / "cluster")
        cluster.base.mkdir()
        try:
            warehouse = f"ca+{nginx.url}/dav/"
            with warehouse_for(warehouse).start_save() as session:
                base = pack_dir(area.rootfs, session.file, filters=Filters())
                session.commit(base)
            cluster.start_scheduler()
            states = {
                "w1": cluster.start_worker("w1", executors="ns,chroot,runc"),
                "w2": cluster.start_worker("w2", executors="ns,chroot"),
            }
            env = DaskEnv(area, nginx, cluster, warehouse, str(base), states, {})
            env.refresh_addresses()
            yield env
        finally:
            pids = [p.pid for p in cluster.processes.values()]
            cluster.stop()
            nginx.stop()
            left = [pid for sid in pids for pid in session_pids(sid)]
            assert not left, f"cluster processes left: {left}"
            mounts = [line.split()[4] for line in mountinfo()]
            under = [m for m in mounts if m.startswith(os.fspath(area.base) + "/")]
            assert not under, f"mounts left under the test area: {under}"


@pytest.fixture(scope="package")
def local_results(dask_env: DaskEnv) -> dict[str, dict[str, str]]:
    """The twelve steps run on this host, without Dask."""
    done = run_locally(
        twelve_steps(dask_env.base), dask_env.warehouse, dask_env.area.base / "local"
    )
    return ware_ids(done)


def client_state(env: DaskEnv) -> Path:
    """A fresh state dir for the client (its memo store)."""
    path = env.area.base / "clients" / uuid.uuid4().hex[:8]
    path.mkdir(parents=True)
    return path


def run_on_dask(
    env: DaskEnv,
    graph: Graph,
    options: RunOptions,
    events: GraphEvents | None = None,
    batch: BatchOptions | None = None,
) -> tuple[DaskRun, GraphOutcome]:
    run = DaskRun(graph, options, batch or BatchOptions(jobs=1), events or GraphEvents(),
                  warehouse=env.warehouse)
    anyio.run(run.run, env.cluster.address, backend="asyncio")
    return run, run.outcome()
