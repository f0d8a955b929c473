"""repeatr: run a process in a container assembled from content-addressed filesets.

Glossary (every module uses these words this way):

fileset
    A tree of files, directories and links with their metadata.
ware
    A fileset packed into a transportable form (a tar, for packtype ``tar``).
ware ID
    ``<packtype>:<hash>``: the packtype and the base58 tree hash of the fileset.
    It names the contents, not the bytes of the archive.
filter
    Rules that normalise metadata (owner, mtime, setid, devices) when packing
    or unpacking a fileset.
warehouse
    A place wares are fetched from or saved to, named by a URL
    (``file://``, ``ca+file://``, ``http(s)://``, ``ca+http(s)://``).
shelf
    A ware unpacked once into the local fileset cache, read-only, shared by
    every run on the host.
formula
    The pure description of a run: inputs (path -> ware ID), action (argv,
    env, cwd, user, policy) and outputs (paths to pack). Its hash is the
    formula ID.
context
    Where to fetch inputs from and save outputs to; not part of the identity.
executor
    What runs the action in an assembled filesystem: chroot, ns, runc, crun,
    gvisor.
cradle
    The defaults applied to a formula before it runs (user, cwd, home, PATH,
    /tmp) so that minimal formulas work.
run record
    What a run produced: formula ID, exit code and the ware ID of every output.
"""

__version__ = "0.1.0"
