#!/usr/bin/env python3
"""Benchmark pack / scan / unpack against the GNU tools doing the same work.

Run as root (it mounts a tmpfs): ``.venv/bin/python scripts/bench/fileset.py``.

Builds a deterministic tree (seeded: ~20k files, ~200 MB, nested dirs, mixed
sizes, half random and half compressible content) on a private tmpfs, then
times, as medians of ``--runs`` runs:

* pack:   ``pack_dir`` to a file  vs  ``tar -czf`` + ``sha384sum`` of every file
* scan:   ``scan_stream`` of that ware, against two GNU figures:
  ``sha384sum`` of the ware (hashes 100 MB of compressed bytes and
  decompresses nothing: a floor, not like-for-like), and
  ``tar -xzOf ware | sha384sum`` (decompress + hash the whole content
  stream: the like-for-like pair; ours also parses headers, hashes each
  file on its own and folds the tree hash)
* scan from a pipe: the same ware through ``cat ware |``, i.e. the in-line
  gzip reader used for streams that arrive over time (the threaded one is
  for regular files only), against the same like-for-like pair
* unpack: ``unpack_stream``  vs  ``tar -xzf`` + ``sha384sum`` of every
  extracted file
* cache:  a cold ``Cache(root).shelf(ware, ["file://..."])`` on a fresh
  cache root (fetch, verify, unpack, record, rename onto the shelf)  vs
  ``tar -xzf`` + ``sha384sum`` of every file: the issue's comparison
* exact hash: ``hash_dir_exact`` of the unpacked tree (what ``cache verify``
  does per shelf)  vs  ``sha384sum`` of every file

and prints every figure and each ratio against the goal (ours within 1.5x
of the GNU pair). The tmpfs is unmounted at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from repeatr.fileset.pack import pack_dir, scan_stream
from repeatr.model.filters import Filters

try:  # absent before the cache recorded the unpack's strict ID
    from repeatr.fileset.pack import hash_dir_exact
except ImportError:  # pragma: no cover - benchmarking an older tree
    hash_dir_exact = None  # type: ignore[assignment]

GOAL = 1.5
TEXT = b"The quick brown fox jumps over the lazy dog; repeatr packs it again.\n"


def build_tree(root: Path, *, files: int, total: int, seed: int) -> tuple[int, int]:
    """A deterministic tree; returns (files, bytes)."""
    rng = random.Random(seed)
    dirs = [root]
    for i in range(files // 20):
        parent = rng.choice(dirs) if len(dirs) < 50 or rng.random() < 0.3 else dirs[-1]
        if len(parent.relative_to(root).parts) >= 6:
            parent = root
        d = parent / f"dir{i:04d}"
        d.mkdir()
        dirs.append(d)
    # Mixed sizes: most small, some medium, a few large; scaled to ~total.
    sizes = []
    for _ in range(files):
        r = rng.random()
        if r < 0.80:
            sizes.append(rng.randint(0, 8 << 10))
        elif r < 0.98:
            sizes.append(rng.randint(8 << 10, 256 << 10))
        else:
            sizes.append(rng.randint(256 << 10, 8 << 20))
    scale = total / sum(sizes)
    sizes = [int(s * scale) for s in sizes]
    written = 0
    for i, size in enumerate(sizes):
        d = dirs[rng.randrange(len(dirs))]
        if rng.random() < 0.5:
            data = rng.randbytes(size)
        else:
            data = (TEXT * (size // len(TEXT) + 1))[:size]
        (d / f"file{i:05d}.dat").write_bytes(data)
        written += size
    return files, written


def median_time(
    fn: Callable[[], object], runs: int, reset: Callable[[], None] | None = None
) -> float:
    times = []
    for _ in range(runs):
        if reset is not None:
            reset()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sh(*argv: str, cwd: Path | None = None) -> None:
    subprocess.run(argv, check=True, cwd=cwd, stdout=subprocess.DEVNULL)


def hash_files(root: Path) -> None:
    """sha384sum of every regular file under root (find | xargs, as a user would)."""
    find = subprocess.Popen(
        ["find", ".", "-type", "f", "-print0"], cwd=root, stdout=subprocess.PIPE
    )
    subprocess.run(
        ["xargs", "-0", "-r", "sha384sum"], cwd=root, stdin=find.stdout,
        stdout=subprocess.DEVNULL, check=True,
    )
    assert find.stdout is not None
    find.stdout.close()
    if find.wait() != 0:
        raise RuntimeError("find failed")


def gnu_stream_hash(ware: Path) -> None:
    """``tar -xzOf ware | sha384sum``: decompress and hash the content stream."""
    tar = subprocess.Popen(["tar", "-xzOf", str(ware)], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    subprocess.run(["sha384sum"], stdin=tar.stdout, stdout=subprocess.DEVNULL, check=True)
    tar.stdout.close()
    if tar.wait() != 0:
        raise RuntimeError("tar -xzOf failed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--megabytes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root: it mounts a tmpfs", file=sys.stderr)
        return 2

    mnt = Path(tempfile.mkdtemp(prefix="repeatr-bench-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g,mode=0700", "tmpfs", str(mnt)],
                   check=True)
    rows: list[tuple[str, float, float, str]] = []
    try:
        tree = mnt / "tree"
        tree.mkdir()
        t0 = time.perf_counter()
        n, size = build_tree(tree, files=args.files, total=args.megabytes << 20, seed=args.seed)
        print(f"machine: nproc {os.cpu_count()}, kernel {platform.release()},"
              f" python {platform.python_version()}")
        print(f"command: {' '.join([sys.executable, *sys.argv])}")
        print(f"tree: {n} files, {size / 2**20:.0f} MiB, built in {time.perf_counter() - t0:.1f}s"
              f" (seed {args.seed}); medians of {args.runs}")

        ware = mnt / "ours.tgz"
        gnu_ware = mnt / "gnu.tgz"

        def ours_pack() -> None:
            with open(ware, "wb") as out:
                ours_pack.ware_id = pack_dir(tree, out, filters=Filters())  # type: ignore[attr-defined]

        def gnu_pack() -> None:
            sh("tar", "-C", str(tree), "-czf", str(gnu_ware), ".")
            hash_files(tree)

        rows.append(("pack", median_time(ours_pack, args.runs), median_time(gnu_pack, args.runs),
                     "tar -czf + sha384sum files"))
        ware_id = ours_pack.ware_id  # type: ignore[attr-defined]
        print(f"ware: {ware.stat().st_size / 2**20:.0f} MiB (ours), "
              f"{gnu_ware.stat().st_size / 2**20:.0f} MiB (GNU tar -z); {ware_id}")

        def ours_scan() -> None:
            with open(ware, "rb") as f:
                got = scan_stream(f)
            assert got == ware_id, (got, ware_id)

        def ours_scan_pipe() -> None:
            cat = subprocess.Popen(["cat", str(ware)], stdout=subprocess.PIPE)
            assert cat.stdout is not None
            try:
                got = scan_stream(cast(BinaryIO, cat.stdout))
            finally:
                cat.stdout.close()
                cat.wait()
            assert got == ware_id, (got, ware_id)

        scan_t = median_time(ours_scan, args.runs)
        stream_hash_t = median_time(lambda: gnu_stream_hash(ware), args.runs)
        rows.append(("scan", scan_t, median_time(lambda: sh("sha384sum", str(ware)), args.runs),
                     "sha384sum ware: a floor, NOT like-for-like"))
        rows.append(("scan", scan_t, stream_hash_t,
                     "tar -xzOf ware | sha384sum: like-for-like"))
        rows.append(("scan|", median_time(ours_scan_pipe, args.runs), stream_hash_t,
                     "ours from a pipe; tar -xzOf | sha384sum"))

        from repeatr.fileset.unpack import unpack_stream

        dest = mnt / "dest"
        cache_root = mnt / "cache"

        def clean() -> None:
            for path in (dest, cache_root):
                if path.exists():
                    shutil.rmtree(path)

        def gnu_unpack() -> None:
            dest.mkdir()
            sh("tar", "-C", str(dest), "-xzf", str(ware))
            hash_files(dest)

        def ours_unpack() -> None:
            with open(ware, "rb") as f:
                result = unpack_stream(f, dest, expected=ware_id, filters=Filters())
            assert result.ware_id == ware_id

        def ours_cache() -> None:
            from repeatr.cache import Cache

            with Cache(cache_root).shelf(ware_id, [ware.as_uri()]) as handle:
                assert handle.unpacked

        gnu_unpack_t = median_time(gnu_unpack, args.runs, clean)
        rows.append(("unpack", median_time(ours_unpack, args.runs, clean), gnu_unpack_t,
                     "tar -xzf + sha384sum files"))
        rows.append(("cache", median_time(ours_cache, args.runs, clean), gnu_unpack_t,
                     "cold shelf; tar -xzf + sha384sum files"))
        clean()
        with open(ware, "rb") as f:
            unpack_stream(f, dest, expected=ware_id, filters=Filters())
        if hash_dir_exact is None:
            print("exact: repeatr.fileset.pack.hash_dir_exact not available; skipped")
        else:
            rows.append(("exact", median_time(lambda: hash_dir_exact(dest), args.runs),
                         median_time(lambda: hash_files(dest), args.runs),
                         "cache verify of one shelf; sha384sum files"))
        rows.append(("hash", median_time(lambda: pack_dir(dest, None, filters=Filters()),
                                         args.runs),
                     median_time(lambda: hash_files(dest), args.runs),
                     "pack_dir hash only; sha384sum files"))
        clean()

        print(f"{'':8}{'ours':>10}{'GNU':>10}{'ratio':>8}  goal <= {GOAL}x   (GNU side)")
        for name, ours, gnu, what in rows:
            ratio = ours / gnu if gnu else float("inf")
            verdict = "ok" if ratio <= GOAL else "MISS"
            print(f"{name:8}{ours * 1000:>8.0f}ms{gnu * 1000:>8.0f}ms{ratio:>7.2f}x"
                  f"  {verdict:10} ({what})")
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        os.rmdir(mnt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
