"""The library runner: what every command that runs formulas calls.

- :mod:`repeatr.runner.run`: one formula. Loads it, decides whether the memo
  store answers it (the file's bytes, :func:`repeatr.memo.bytes_key`, then
  the formula ID), chooses the executor, the network settings, calls the
  supervisor (:func:`repeatr.supervisor.run_formula`), remembers the record,
  writes ``--output-dir``. ``run`` (async) and ``run_sync``.
- :mod:`repeatr.runner.batch`: many formulas in one event loop, under one
  capacity limiter, sharing the shelves of their inputs
  (:class:`repeatr.cache.shared.SharedCache`).

The CLI (``repeatr.cli``) only parses arguments and prints what these
report. This package's ``__init__`` stays import-light: the CLI reads
``EXECUTORS`` to build its parser, ``--help`` included.
"""

from __future__ import annotations

#: What ``--executor`` accepts: ``auto`` (the best this host offers) or a name.
EXECUTORS = ("auto", "ns", "chroot", "runc", "crun", "gvisor", "vm")
