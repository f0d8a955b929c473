"""Many processes, one ware: exactly one unpacks, all get the same verified shelf."""

from __future__ import annotations

import json
from pathlib import Path

from repeatr.cache import Cache
from repeatr.fileset.pack import hash_dir_exact
from tests.cache.conftest import Workers, make_ware, tree, wait_for

N = 16


def test_sixteen_processes_one_unpack(tmp_path: Path, root: Path, workers: Workers) -> None:
    files: dict[str, bytes | str] = {
        f"d{i % 7}/f{i}": bytes([i % 251]) * (i * 37) for i in range(300)
    }
    files["link"] = "d0/f0"
    ware = make_ware(tmp_path / "wares" / "w.tgz", files)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        workers.start(
            cmd="shelf", root=str(root), ware=str(ware.id), urls=[ware.url], barrier=str(barrier)
        )
        for _ in range(N)
    ]
    wait_for(lambda: len(list(barrier.glob("ready.*"))) == N, what="all workers ready")
    (barrier / "go").touch()
    results = [Workers.result(p) for p in procs]

    assert all(r["ok"] for r in results), results
    assert [r["unpacked"] for r in results].count(True) == 1
    assert len({r["path"] for r in results}) == 1
    shelf = Path(results[0]["path"])
    assert (shelf / "d3/f10").read_bytes() == bytes([10]) * 370
    assert (shelf / "link").readlink() == Path("d0/f0")
    # The shelf re-hashes to the strict ID recorded for it, which every
    # worker was handed; no temp dirs are left behind.
    strict = hash_dir_exact(shelf)
    assert {r["strict"] for r in results} == {str(strict)}
    assert tree(root / "tmp") == []
    assert Cache(root).verify() == []


def test_record_matches_what_verify_rehashes(tmp_path: Path, root: Path) -> None:
    """A PAX ware with sub-second mtimes: the recorded strict ID is the re-hashable one."""
    ware = make_ware(tmp_path / "w.tgz", {"a": b"x", "l": "a"}, mtime=1600000000.5)
    with Cache(root).shelf(ware.id, [ware.url]) as handle:
        assert handle.unpacked
        rehashed = hash_dir_exact(handle.path)
        assert handle.record.strict == str(rehashed)
        assert json.loads(
            (root / "meta")
            .joinpath(ware.id.packtype, ware.id.hash[:3], ware.id.hash[3:6], ware.id.hash + ".json")
            .read_text()
        )["strict"] == str(rehashed)
