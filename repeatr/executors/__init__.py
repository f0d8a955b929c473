"""Executors: what runs a job in an assembled filesystem.

``base`` holds the interface and the closed set of names; ``chroot`` and
``ns`` drive ``sandbox`` (the in-container helper, a fresh process) through
``helper``. Importing this package imports nothing else.
"""
