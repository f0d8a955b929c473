"""Attachment records: which kernel objects a run's network consists of, and who owns them.

``<state_dir>/runs.d/<run_id>`` (JSON) is written *before* anything is
created for the run and removed *after* everything is gone, so a process
that dies at any point (SIGKILL included) leaves a record naming its
network namespace, veth and lease, and an owner that is no longer alive.
:mod:`repeatr.net.gc` works from these.

A record is written to a temporary name and linked into place, so it is
either complete or absent; linking fails if the run ID already has one.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import msgspec

from repeatr.errors import Category, NetworkError
from repeatr.net.config import NetHost, check_run_id
from repeatr.owner import Owner

#: Temporary files older than this are leftovers of a crashed writer.
_TMP_MAX_AGE = 60.0


class AttachRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    run_id: str
    owner: str
    policy: str
    netns: str | None = None
    veth: str | None = None
    network: str | None = None
    subnet: str | None = None

    def owner_alive(self) -> bool:
        owner = Owner.try_parse(self.owner)
        # An unreadable owner cannot be judged: count it as alive (never reclaim what
        # might be in use). Records are written atomically, so this means tampering.
        return owner is None or owner.is_alive()


def write(host: NetHost, record: AttachRecord) -> Path:
    directory = host.records_dir
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / check_run_id(record.run_id)
    tmp = directory / f".{record.run_id}.{os.getpid()}.tmp"
    tmp.write_bytes(msgspec.json.encode(record))
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise NetworkError(
            f"run {record.run_id} already has a network (record {final})",
            category=Category.INTERNAL,
            hint="run IDs must be unique; if that run is gone, `repeatr gc` removes it",
        ) from None
    finally:
        os.unlink(tmp)
    return final


def read(path: Path) -> AttachRecord | None:
    """The record at ``path``; None if it is gone or unreadable."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=AttachRecord)
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def lookup(host: NetHost, run_id: str) -> AttachRecord | None:
    return read(host.records_dir / check_run_id(run_id))


def remove(host: NetHost, run_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(host.records_dir / check_run_id(run_id))


def all_records(host: NetHost) -> list[AttachRecord]:
    """Every complete record; removes temporary files a crashed writer left behind."""
    try:
        names = os.listdir(host.records_dir)
    except FileNotFoundError:
        return []
    out = []
    now = time.time()
    for name in names:
        path = host.records_dir / name
        if name.startswith("."):
            try:
                if now - path.stat().st_mtime > _TMP_MAX_AGE:
                    path.unlink()
            except FileNotFoundError:
                pass
            continue
        record = read(path)
        if record is not None:
            out.append(record)
    return out
