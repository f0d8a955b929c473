"""``python -m repeatr`` is the ``repeatr`` command."""

from repeatr.cli.entry import entry

entry()
