"""A process killed mid-unpack leaves only a temp dir, which the next user removes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from repeatr.cache import Cache
from repeatr.cache.layout import Layout, TempName
from tests.cache.conftest import REPO, Workers, make_ware, pid_exists, tree, wait_for


def _big_ware_files(n: int = 3000) -> dict[str, bytes | str]:
    """Served as a plain tar: the gzip reader reads several MB ahead, so half of
    a small .tgz may extract nothing yet; a plain tar extracts as it arrives."""
    rng = random.Random(42)
    return {f"dir{i // 100:02d}/file{i:05d}": rng.randbytes(1024) for i in range(n)}


def _inner_entries(layout: Layout) -> int:
    """Files written so far inside any unpack temp dir."""
    return sum(1 for temp in layout.list_temps() for p in temp.rglob("*") if p.is_file())


@pytest.mark.slow
def test_sigkill_mid_unpack_leaves_temp_that_next_user_removes(
    tmp_path: Path, root: Path, workers: Workers
) -> None:
    ware = make_ware(tmp_path / "wares" / "big.tar", _big_ware_files(), gzip=False)
    size = ware.path.stat().st_size
    portfile = tmp_path / "port"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.cache.slow_server",
            str(ware.path),
            str(size // 2),
            str(portfile),
        ],
        cwd=REPO,
    )
    try:
        wait_for(portfile.exists, what="slow server")
        url = f"http://127.0.0.1:{portfile.read_text()}/big.tgz"
        victim = workers.start(cmd="shelf", root=str(root), ware=str(ware.id), urls=[url])
        layout = Layout(root)
        wait_for(lambda: _inner_entries(layout) > 200, what="the unpack to get going")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    finally:
        server.kill()
        server.wait()

    # Only a temp dir, named by the dead owner; no shelf, no record.
    assert not layout.shelf(ware.id).exists()
    assert not layout.record(ware.id).exists()
    temps = layout.list_temps()
    assert len(temps) == 1
    name = TempName.parse(temps[0].name)
    assert name is not None and name.kind == "unpack" and name.ware == ware.id
    assert name.owner.pid == victim.pid and not name.owner.is_alive()
    assert not pid_exists(victim.pid)

    # The next user cleans up and unpacks from a good source.
    with Cache(root).shelf(ware.id, [ware.url]) as handle:
        assert handle.unpacked
        assert len(tree(handle.path)) == 3000 + 30
    assert tree(root / "tmp") == []
    assert Cache(root).verify() == []


def test_clean_stale_spares_live_owners(tmp_path: Path, root: Path) -> None:
    layout = Layout(root)
    layout.ensure_dirs()
    ware = make_ware(tmp_path / "w.tgz", {"a": b"1"}).id
    dead = subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert dead.returncode == 0
    from repeatr.owner import Owner

    me = Owner.current()
    gone = Owner(pid=me.pid, start=me.start + 1, boot=me.boot, host=me.host)  # a reused pid
    mine = layout.temp_name("unpack", ware, me)
    stale = layout.temp_name("unpack", ware, gone)
    for path in (mine, stale):
        (path / "sub").mkdir(parents=True)
    removed = Cache(root).clean_stale()
    assert removed == [stale.name]
    assert mine.exists() and not stale.exists()
