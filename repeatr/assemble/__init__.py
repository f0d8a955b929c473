"""Assembly: the container filesystem as a list of operations.

``ops`` defines the operations (bind, overlay, tmpfs, proc, dev, and the
cradle's mkdir) as data; ``plan`` orders and checks them; ``resolve`` walks
container paths without following symlinks. The operations are executed by
the executor's helper process inside its own mount namespace, never in the
host's. Stdlib-only so the helper starts fast.
"""
