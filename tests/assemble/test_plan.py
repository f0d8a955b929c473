"""The planner: order, uniqueness, the root, nothing under host binds."""

from __future__ import annotations

import json

import pytest

from repeatr.assemble.cradle import cradle_steps, system_mounts
from repeatr.assemble.ops import Bind, Dev, Mkdir, Overlay, Proc, Tmpfs, op_from_json
from repeatr.assemble.plan import plan
from repeatr.errors import AssemblyError, Category


def test_parents_first_and_proc_late() -> None:
    p = plan([
        Tmpfs("/a/b/c"), Tmpfs("/a/b"), Proc("/proc"), Bind("/srv", "/srv"),
        Overlay(("/shelf",), "/", "/w/u", "/w/w"), Tmpfs("/a"), Dev("/dev"),
    ])
    targets = [o.target for o in p.mounts]
    assert targets == ["/", "/a", "/a/b", "/a/b/c", "/dev", "/srv"]
    assert [o.target for o in p.late] == ["/proc"]


def test_sibling_sort_is_by_component() -> None:
    # "/a-b" sorts before "/a/" bytewise; by component "/a" then "/a/x" then "/a-b".
    p = plan([Tmpfs("/a/x"), Tmpfs("/a-b"), Tmpfs("/a")])
    targets = [o.target for o in p.mounts]
    assert targets.index("/a") < targets.index("/a/x")


def test_no_root_gets_a_tmpfs_root() -> None:
    p = plan([Tmpfs("/x")])
    assert p.mounts[0] == Tmpfs("/", 0o755)


def test_duplicate_destination() -> None:
    with pytest.raises(AssemblyError) as info:
        plan([Tmpfs("/x"), Bind("/srv", "/x")])
    assert info.value.category == Category.ASSEMBLY_INVALID


@pytest.mark.parametrize("dest", ["x", "/a/../b", "/a/./b", "/a//b", "/a/", "/a\0b"])
def test_bad_destination(dest: str) -> None:
    with pytest.raises(AssemblyError):
        plan([Tmpfs(dest)])


def test_nothing_under_a_host_bind() -> None:
    with pytest.raises(AssemblyError):
        plan([Bind("/srv", "/mnt"), Tmpfs("/mnt/sub")])
    # A cradle step there is marked: it leaves the host's directories alone.
    inside, at, beside = plan(
        [Bind("/srv", "/mnt")], [Mkdir("/mnt/task"), Mkdir("/mnt"), Mkdir("/mntx")]
    ).cradle
    assert (inside.host, at.host, beside.host) == ("/mnt", "/mnt", None)
    assert plan([Bind("/srv", "/")], [Mkdir("/tmp")]).cradle[0].host == "/"


def test_nothing_inside_proc() -> None:
    with pytest.raises(AssemblyError):
        plan([Proc("/proc"), Tmpfs("/proc/sys")])


def test_json_round_trip() -> None:
    ops = [
        Overlay(("/a", "/b"), "/", "/u", "/w"), Bind("/s", "/d", ro=False, recursive=False),
        Tmpfs("/t", 0o1777, "10m"), *system_mounts(),
        *cradle_steps(cwd="/task", home="/home/x", uid=7, gid=8),
    ]
    for op in ops:
        assert op_from_json(json.loads(json.dumps(op.to_json()))) == op
        assert op.describe()


def test_unknown_op() -> None:
    with pytest.raises(AssemblyError):
        op_from_json({"op": "nfs", "dest": "/x"})


def test_cradle_steps() -> None:
    steps = cradle_steps(cwd="/task", home="/home/reuser", uid=1000, gid=1000)
    # The original's order: cwd, home, then /tmp.
    assert [(s.path, s.mode, s.uid, s.usable) for s in steps] == [
        ("/task", 0o755, 1000, True), ("/home/reuser", 0o755, 1000, True),
        ("/tmp", 0o1777, 0, False),
    ]
    assert len(cradle_steps(cwd="/root", home="/root", uid=0, gid=0)) == 2
    assert len(cradle_steps(cwd="/", home="/root", uid=0, gid=0)) == 3
