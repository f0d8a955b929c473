"""``python -m repeatr`` is the ``repeatr`` command."""

from repeatr.cli.main import entry

entry()
