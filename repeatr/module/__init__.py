"""Modules: many formulas wired into one graph, in the original reach's format.

Data flow: ``module.tl`` (:mod:`.model`, module names :mod:`.names`) ->
checked and ordered (:mod:`.order`) -> imports pinned (:mod:`.pins`, from
the workspace's catalog :mod:`.catalog` and ingests :mod:`.ingest`; where
things are: :mod:`.layout`) -> a :class:`repeatr.graph.model.Graph`
(:mod:`.build`) -> planned or run (:mod:`.run`), or drawn (:mod:`.render`).
"""
