"""Graphs of formulas: built from a module (or a batch), run locally or on Dask.

- :mod:`repeatr.graph.model`: the graph (nodes, their inputs, results) and
  how a node's formula file is filled in from the nodes it reads.
"""
