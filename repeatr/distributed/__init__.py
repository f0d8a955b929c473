"""Formulas and graphs on a Dask distributed cluster (``--dask tcp://HOST:PORT``).

A graph (:class:`repeatr.graph.model.Graph`: a module, or a batch of formula
files) runs with one Dask task per node; a task runs repeatr's runner on a
worker and returns plain data. Wares move between workers through one
warehouse every worker can read and write (``--warehouse``): every input is
fetched from it, every output saved to it.

- :mod:`repeatr.distributed.client`: ``run_graph_dask``, the client side
  (memo, submitting, events, the outcome).
- :mod:`repeatr.distributed.task`: what a task runs on a worker, and the plain
  data it returns.
- :mod:`repeatr.distributed.worker`: the worker preload (``dask worker …
  --preload repeatr.distributed``): the host check, the resources a worker
  declares, the runner's event loop and sandbox server.
- :mod:`repeatr.distributed.resources`: which worker resources a host offers
  and a node needs (executors, networks).
- :mod:`repeatr.distributed.formulas`: a batch of formula files as a flat graph.

``distributed`` is an optional dependency (``pip install 'repeatr[dask]'``)
and slow to import: this ``__init__`` imports nothing of it, and no module of
repeatr imports this package unless ``--dask`` is given (or a Dask worker
loads it as its preload).
"""

from __future__ import annotations

from typing import Any

from repeatr.errors import UsageError

#: What to install when ``distributed`` is missing.
INSTALL_HINT = "pip install 'repeatr[dask]'"


def require() -> None:
    """UsageError (exit 1) saying what to install when ``distributed`` is not there."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"--dask needs Dask distributed, which is not installed ({exc})",
            hint=f"install it with: {INSTALL_HINT}",
        ) from None


def __getattr__(name: str) -> Any:
    # A Dask worker started with ``--preload repeatr.distributed`` looks up
    # ``dask_setup`` / ``dask_teardown`` here; they live in ``worker`` (which
    # imports distributed), loaded only then.
    if name in ("dask_setup", "dask_teardown"):
        from repeatr.distributed import worker

        return getattr(worker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
