"""The formula file: what to run (the formula) and where wares come from (the context).

Shape and names follow the original's go-timeless-api (``Formula``,
``FormulaAction``, ``FormulaUserinfo``; see docs/formula.md). As in the
original, an empty string / empty list / empty map means the same as absent
for the optional action fields; ``inputs`` and ``outputs`` are the exception:
absent (null) and ``{}`` are different and hash differently.

Adding fields later (``action.limits``, ``action.network``, ...): give the new
field a default of ``None`` and add it to the end of ``Action`` (after
``hostname``). ``repeatr.model.formula_id`` lists the hashed fields by hand
and only emits a new field when it is set, so every formula that does not use
it keeps its formula ID. Never add a field to the ID encoding unconditionally.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

import msgspec

from repeatr.errors import FormulaError, UsageError
from repeatr.model.jsonload import Key, decode
from repeatr.model.limits import Limits
from repeatr.model.limits import problems as limit_problems
from repeatr.model.wareid import PACKTYPES, WareID

if TYPE_CHECKING:
    from repeatr.model.filters import Filters

PolicyName = Literal["", "routine", "governor", "sysad"]
CradleMode = Literal["", "disable"]

#: Largest uid/gid we accept: 2**32 - 2 (2**32 - 1 is the kernel's "no id").
MAX_ID = 2**32 - 2

#: Longest single argument or ``NAME=value`` that execve(2) takes, in bytes
#: with its NUL: MAX_ARG_STRLEN, 32 pages (include/uapi/linux/binfmts.h).
MAX_ARG_STRLEN = 32 * 4096
#: Most bytes argv and environment together may take: a quarter of the stack
#: rlimit (fs/exec.c ``bprm_stack_limits``), 2 MiB with the usual 8 MiB stack.
#: Each string counts with its NUL, plus a pointer (8 bytes) to it. A host
#: with a smaller stack rlimit can still refuse less at exec: that is then
#: JobInvalid "argument list too long" on every executor.
MAX_ARG_TOTAL = 2 << 20
_POINTER = 8
#: Longest hostname the kernel takes: HOST_NAME_MAX (include/uapi/linux/utsname.h).
MAX_HOSTNAME = 64


NetworkName = Literal["", "none", "host", "bridge"]


class _Base(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Frozen, keyword-only, unknown keys rejected, defaults omitted when encoded."""


class UserInfo(_Base, frozen=True):
    uid: int | None = None
    gid: int | None = None
    username: str = ""
    homedir: str = ""


class Action(_Base, frozen=True):
    # Declaration order is the original's field order (it matters for the ID).
    exec: tuple[str, ...] = ()
    noop: bool = False
    policy: PolicyName = ""
    cwd: str = ""
    env: dict[str, str] | None = None
    userinfo: UserInfo | None = None
    cradle: CradleMode = ""
    hostname: str = ""
    # New optional fields go here, defaulting to None (see module docstring).
    limits: Limits | None = None
    #: "none" (the default when absent: own namespace, loopback only), "host", "bridge".
    network: NetworkName = ""
    #: DNS servers for a bridge network's /etc/resolv.conf (default: the host's).
    nameservers: tuple[str, ...] | None = None


class Output(_Base, frozen=True):
    packtype: str
    filters: dict[str, str] | None = None

    def pack_filters(self) -> Filters:
        """The filters to pack with: pack-flatten, overridden by the fields set here."""
        from repeatr.model import filters  # only formulas with outputs need them

        return filters.from_mapping(
            "pack", self.filters or {}, filters.PACK_FLATTEN, ignore_unknown=True
        )


class Formula(_Base, frozen=True):
    inputs: dict[str, str] | None = None
    action: Action = msgspec.field(default_factory=Action)
    outputs: dict[str, Output] | None = None

    def input_sources(self) -> dict[str, InputSource]:
        """Each input path's parsed source: a ware ID or a host mount."""
        return {path: parse_input(value) for path, value in (self.inputs or {}).items()}


class Context(_Base, frozen=True):
    """Where to fetch inputs from and save outputs to. Never part of the formula ID."""

    fetch_urls: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict, name="fetchUrls")
    save_urls: dict[str, str] = msgspec.field(default_factory=dict, name="saveUrls")


class FormulaFile(_Base, frozen=True):
    formula: Formula
    context: Context | None = None


# ---------------------------------------------------------------- input sources


class HostMount(msgspec.Struct, frozen=True):  # as WareID: no dataclasses import
    """``mount:ro:/host/path`` or ``mount:rw:/host/path`` in place of a ware ID.

    In the original the mount string is parsed as a ware ID of type ``mount``
    whose hash is ``<mode>:<host path>`` (rio ``stitch/treeUnpack.go``), and it
    is hashed as that text.
    """

    writable: bool
    host_path: str

    def __str__(self) -> str:
        return f"mount:{'rw' if self.writable else 'ro'}:{self.host_path}"


InputSource = WareID | HostMount


def parse_input(value: str) -> InputSource:
    """Parse an input's value; raises ``UsageError`` saying what is wrong."""
    if value.startswith("mount:"):
        mode, sep, host_path = value.removeprefix("mount:").partition(":")
        if not sep or mode not in ("ro", "rw"):
            raise UsageError(
                f"invalid mount {value!r}: expected 'mount:ro:/host/path' or 'mount:rw:/host/path'"
            )
        if problem := _abs_path_problem(host_path):
            raise UsageError(f"invalid mount {value!r}: host path {problem}")
        return HostMount(writable=mode == "rw", host_path=host_path)
    return WareID.parse(value)


# ---------------------------------------------------------------- validation

Problems = list[tuple[list[str | int], str]]


def _abs_path_problem(path: str) -> str | None:
    if not path.startswith("/"):
        return "must be an absolute path (start with '/')"
    if "\0" in path:
        return "must not contain NUL"
    if ".." in PurePosixPath(path).parts:
        return "must not contain '..'"
    return None


def _encoded_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _check_exec_size(act: Action, action: list[str | int], problems: Problems) -> None:
    """What execve(2) would refuse with E2BIG (``argument list too long``), refused here."""
    total = 0
    for i, arg in enumerate(act.exec):
        size = _encoded_size(arg) + 1
        total += size + _POINTER
        if size > MAX_ARG_STRLEN:
            problems.append(
                (
                    [*action, "exec", i],
                    f"argument list too long: this argument is {size - 1} bytes; the kernel"
                    f" takes at most {MAX_ARG_STRLEN - 1} per argument",
                )
            )
    for key, value in (act.env or {}).items():
        size = _encoded_size(key) + 1 + _encoded_size(value) + 1
        total += size + _POINTER
        if size > MAX_ARG_STRLEN:
            problems.append(
                (
                    [*action, "env", Key(key)],
                    f"too long: NAME=value is {size - 1} bytes; the kernel takes at most"
                    f" {MAX_ARG_STRLEN - 1} per variable",
                )
            )
    if total > MAX_ARG_TOTAL:
        problems.append(
            (
                [*action, "exec"],
                f"argument list too long: exec and env take {total} bytes; the kernel takes"
                f" at most {MAX_ARG_TOTAL} (a quarter of the usual 8 MiB stack)",
            )
        )


def _hostname_problem(name: str) -> str | None:
    """Why the kernel (or the /etc/hosts line repeatr writes for it) can't take ``name``."""
    size = _encoded_size(name)
    if size > MAX_HOSTNAME:
        return f"is {size} bytes; a hostname has at most {MAX_HOSTNAME}"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        what = "NUL" if "\0" in name else "whitespace or control characters"
        return f"must not contain {what}"
    return None


def _check_paths(keys: Mapping[str, object], at: list[str | int], problems: Problems) -> None:
    for path in keys:
        if problem := _abs_path_problem(path):
            problems.append(([*at, Key(path)], f"path {problem}"))


def validate(frm: Formula, at: list[str | int] | None = None) -> Problems:
    """Semantic checks msgspec's types cannot express; returns ``(path, message)`` problems."""
    base: list[str | int] = at if at is not None else []
    problems: Problems = []
    inputs = [*base, "inputs"]
    _check_paths(frm.inputs or {}, inputs, problems)
    for path, value in (frm.inputs or {}).items():
        try:
            parse_input(value)
        except UsageError as exc:
            problems.append(([*inputs, Key(path)], exc.message))

    action = [*base, "action"]
    act = frm.action
    if not act.exec and not act.noop:
        problems.append((action, "needs 'exec' (a non-empty argv) or 'noop': true"))
    if act.exec and act.noop:
        problems.append((action, "'exec' and 'noop' cannot both be set"))
    for i, arg in enumerate(act.exec):
        if "\0" in arg:
            problems.append(([*action, "exec", i], "must not contain NUL"))
    _check_exec_size(act, action, problems)
    if act.hostname and (problem := _hostname_problem(act.hostname)):
        problems.append(([*action, "hostname"], problem))
    if act.cwd and (problem := _abs_path_problem(act.cwd)):
        problems.append(([*action, "cwd"], problem))
    for key, value in (act.env or {}).items():
        where: list[str | int] = [*action, "env", Key(key)]
        if not key:
            problems.append((where, "environment variable names must not be empty"))
        elif "=" in key:
            problems.append((where, "environment variable names must not contain '='"))
        if "\0" in key or "\0" in value:
            problems.append((where, "must not contain NUL"))
    if act.userinfo is not None:
        user = [*action, "userinfo"]
        for field in ("uid", "gid"):
            number = getattr(act.userinfo, field)
            if number is not None and not 0 <= number <= MAX_ID:
                problems.append(([*user, field], f"must be between 0 and {MAX_ID}"))
        if act.userinfo.homedir and (problem := _abs_path_problem(act.userinfo.homedir)):
            problems.append(([*user, "homedir"], problem))
    if act.limits is not None:
        for name, message in limit_problems(act.limits):
            problems.append(([*action, "limits", name], message))
    if act.nameservers is not None:
        if act.network != "bridge":
            problems.append(([*action, "nameservers"], 'only used with "network": "bridge"'))
        for i, server in enumerate(act.nameservers):
            try:
                ipaddress.ip_address(server)
            except ValueError:
                problems.append(([*action, "nameservers", i], f"{server!r} is not an IP address"))

    outputs = [*base, "outputs"]
    _check_paths(frm.outputs or {}, outputs, problems)
    for path, out in (frm.outputs or {}).items():
        where = [*outputs, Key(path)]
        if out.packtype not in PACKTYPES:
            known = ", ".join(PACKTYPES)
            problems.append(
                ([*where, "packtype"], f"unknown packtype {out.packtype!r} (known: {known})")
            )
        for name, value in (out.filters or {}).items():
            from repeatr.model import filters  # only formulas with output filters need them

            try:
                filters.from_mapping("pack", {name: value}, ignore_unknown=True)
            except UsageError as exc:
                problems.append(([*where, "filters", Key(name)], exc.message))
    return problems


def warnings(frm: Formula) -> list[str]:
    """What is accepted but probably not meant: one message per finding.

    Unknown keys in an output's ``filters`` are ignored, as the original
    ignored them (and left them out of the formula ID); a typo such as
    ``"mtme"`` would otherwise pass unnoticed. The caller shows these.
    """
    found: list[str] = []
    for path, out in (frm.outputs or {}).items():
        if not out.filters:
            continue
        from repeatr.model import filters

        for name in filters.unknown_fields(out.filters):
            found.append(
                f"formula.outputs[{path!r}].filters: unknown field {name!r} ignored"
                f" (known: {', '.join(filters.FIELDS)})"
            )
    return found


def _validate_file(ff: FormulaFile) -> Problems:
    problems = validate(ff.formula, ["formula"])
    if ff.context is not None:
        _check_paths(ff.context.fetch_urls, ["context", "fetchUrls"], problems)
        _check_paths(ff.context.save_urls, ["context", "saveUrls"], problems)
    return problems


# ---------------------------------------------------------------- loading


def load_formula_bytes(data: bytes, name: str) -> FormulaFile:
    """Parse and validate a formula file's bytes; ``name`` prefixes every error."""
    return decode(data, FormulaFile, name, check=_validate_file)


def read_formula_file(path: str | os.PathLike[str]) -> bytes:
    """A formula file's bytes, read once; ``FormulaError`` (exit 1) naming the file.

    A regular file or a pipe (``repeatr run /dev/stdin``, ``<(...)``, a
    FIFO) only: a directory, a socket or a device (``/dev/zero`` would be
    read forever, a tape would be moved) is refused before it is read. The
    file is opened without blocking (a FIFO with no writer, a device), its
    type checked on the descriptor, and read through that descriptor: every
    later step uses these bytes, never the path again, so a file swapped
    meanwhile cannot give a run two formulas.
    """
    name = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise FormulaError(f"cannot read formula file {name}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if stat.S_ISFIFO(st.st_mode):
            # Wait for a writer as ``cat`` does (opened without O_NONBLOCK),
            # and read the same pipe that was checked.
            os.close(fd)
            fd = -1
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            again = os.fstat(fd)
            if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
                raise FormulaError(f"cannot read formula file {name}: replaced while opened")
        elif not stat.S_ISREG(st.st_mode):
            raise FormulaError(
                f"cannot read formula file {name}: not a regular file or a pipe"
                f" ({_file_kind(st.st_mode)})"
            )
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise FormulaError(f"cannot read formula file {name}: {exc.strerror or exc}") from exc
    finally:
        if fd >= 0:
            os.close(fd)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a file"


def load_formula_file(path: str | os.PathLike[str]) -> FormulaFile:
    """Read (once: :func:`read_formula_file`), parse and validate a formula file;
    raises ``FormulaError`` (exit 1)."""
    return load_formula_bytes(read_formula_file(path), os.fspath(path))
