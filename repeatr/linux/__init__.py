"""Linux kernel interfaces: the only place repeatr talks to the kernel via ctypes.

``libc`` declares every direct kernel call (mount, umount2, unshare, setns,
pivot_root, prctl, capset, sethostname, mount_setattr, openat2); ``capability``
holds the capability numbers; ``rmtree`` removes the trees a job or a ware
shaped (fd-relative, iterative, never through a symlink or into a mount).
Importing this package is cheap: stdlib only, so the in-container helper
(``repeatr.executors.sandbox``) can use it.
"""
