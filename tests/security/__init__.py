"""The attack suite (issue 11): what each executor promises to stop, tried.

``docs/executors.md`` ("What each executor stops") is the source: one row per
attack, one cell per executor. ``test_attacks.py`` generates the tests from
it, ``attacks.py`` holds one function per attack, ``attack.c`` is the tool the
jobs run, ``test_payloads.py`` shows each payload works outside a container.
Needs root, gcc and the runtimes: ``.venv/bin/python -m pytest tests/security``.
"""
