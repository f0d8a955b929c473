"""Linux kernel interfaces: the only place repeatr talks to the kernel directly.

``libc`` is every direct kernel call (mount, umount2, unshare, setns, prctl,
sethostname, mount_setattr, openat2), made by the compiled ``_libc``;
``_jobstart`` is the job's start (pivot_root, capset... in C); ``capability``
holds the capability numbers; ``rmtree`` removes the trees a job or a ware
shaped (fd-relative, iterative, never through a symlink or into a mount).
Importing this package is cheap: stdlib and compiled modules only, no ctypes,
so the in-container helper (``repeatr.executors.sandbox``) can use it; ctypes
is loaded only to compile a seccomp program (``libseccomp``) and to read
archives (``repeatr.fileset.reader``).
"""
