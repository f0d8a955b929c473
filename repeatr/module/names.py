"""Module names: a DNS-1123 subdomain, then ``/`` path segments.

As go-timeless-api's catalogValidation.go checks them, with its messages.

A module's name is also its directory in a catalog (``.timeless/catalog/<name>/``),
so these rules keep that mapping safe: no ``..``, no empty segments, lower case.
"""

from __future__ import annotations

import re

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_SEGMENT = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_SUBDOMAIN_MAX = 253
_SEGMENT_MAX = 63

_SUBDOMAIN_MSG = (
    "must consist of lower case alphanumeric characters, '-' or '.',"
    " and must start and end with an alphanumeric character"
)
_SEGMENT_MSG = (
    "must consist of lower case alphanumeric characters or '-' or '.',"
    " and must start and end with an alphanumeric character"
)


def _subdomain(use: str, value: str) -> str | None:
    if len(value) > _SUBDOMAIN_MAX:
        return f"a {use} must be no more than {_SUBDOMAIN_MAX} characters"
    if not _SUBDOMAIN.fullmatch(value):
        return f"a {use} {_SUBDOMAIN_MSG}"
    return None


def _segment(value: str) -> str | None:
    use = "moduleName path segment"
    if len(value) > _SEGMENT_MAX:
        return f"a {use} must be no more than {_SEGMENT_MAX} characters"
    if not _SEGMENT.fullmatch(value):
        return f"a {use} {_SEGMENT_MSG}"
    return None


def module_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid module name (the original's message), or None."""
    if not name:
        return "a moduleName cannot be an empty string"
    first, *rest = name.split("/")
    if not rest:
        return _subdomain("moduleName", first)
    if problem := _subdomain("moduleName first segment", first):
        return problem
    for segment in rest:
        if problem := _segment(segment):
            return problem
    return None
