"""Importing container images as wares.

An *image* (a ``docker export`` tar of one root filesystem, or an OCI image
layout with its stack of *layers*) becomes one *fileset*: the layers are
flattened in order (whiteouts applied, hardlinks turned into copies), the
result is packed like any directory, and the ware ID printed or the ware
stored in a *warehouse*.

- :mod:`repeatr.imports.layout`: reading an OCI layout (index, manifests,
  platforms, digest-verified blobs).
- :mod:`repeatr.imports.flatten`: merging layers in memory and writing the
  result once with the safe extractor.
- :mod:`repeatr.imports.importer`: one import from source to ware, in a temp
  dir that is always removed.

Layer tars are hostile input like any ware: they go through the same reader
(name cleaning) and :class:`~repeatr.fileset.extract.SafeWriter` (no writes
outside the target, never through a symlink). See docs/importing.md.
"""

from repeatr.imports.importer import IMPORT_KEEP, Flattened, flatten, import_source

__all__ = ["IMPORT_KEEP", "Flattened", "flatten", "import_source"]
