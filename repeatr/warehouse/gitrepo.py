"""``git:<commit>`` wares: a commit's tree, fetched from git repositories.

The original (rio ``transmat/git``) unpacks a git ware as the committed tree
without ``.git``, with fixed metadata, and the trees of submodules one level
deep. We do the same with Debian's ``git`` binary:

* Sources are repository addresses: ``file:///path``, ``http(s)://...``
  (smart or dumb HTTP), ``git://``, ``ssh://``, or a local path. Each is
  fetched (every ref) into a private bare repository until one has the
  commit; an unreachable repository moves on to the next source
  (WAREHOUSE_UNAVAILABLE), one without the commit too (WARE_NOT_FOUND).
* Metadata, as rio sets it: the root dir 0755, 0:0 (the inferred-dir
  default); every other dir 0755, files 0644 or 0755 (executable), symlinks
  to the blob's text; all of them uid/gid 1000, mtime 2010-01-01.
* Submodules: a gitlink at the top level is replaced by its commit's tree,
  fetched from the URL ``.gitmodules`` gives for that path (a relative URL
  is resolved against the superproject's source, as git does); its root
  gets the root's metadata. Gitlinks inside a submodule become empty dirs.
  A repository fetched from a remote source may not name a local path or
  ``file://`` URL there (that would make this host read its own repositories
  into the ware): such a ware is refused (WARE_CORRUPT).

git verifies every object against its hash, so the ware ID (the commit) is
not re-hashed. Only the protocols above are allowed
(``GIT_ALLOW_PROTOCOL``), so a ``.gitmodules`` cannot run commands through
``ext::``; no user or system git config is read.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from repeatr.errors import Category, FilesetError, UsageError, WarehouseError
from repeatr.fileset.entry import Entry, EntryType
from repeatr.fileset.members import Plain
from repeatr.model.filters import DEFAULT_MTIME
from repeatr.model.wareid import GIT, WareID

__all__ = ["read_git"]

_PROTOCOLS = "file:http:https:git:ssh"
_BLOCK = 1 << 20
#: rio's metadata for everything in a git ware below the root.
_UID = _GID = 1000


#: Passed through from our environment: proxies, CA certificates, the ssh agent.
_PASSED = (
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO", "SSH_AUTH_SOCK",
)


def _env(home: Path) -> dict[str, str]:
    return {
        **{name: os.environ[name] for name in _PASSED if name in os.environ},
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.fspath(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": _PROTOCOLS,
        "GIT_ASKPASS": "/bin/true",
        "LC_ALL": "C",
    }


class _Repo:
    """A private bare repository that collects the objects of every source."""

    def __init__(self, path: Path, checkpoint: Callable[[], None] | None = None) -> None:
        if shutil.which("git") is None:
            raise FilesetError(
                "git wares need git: it is not installed",
                category=Category.INTERNAL,
                hint="install it (apt-get install git)",
            )
        self.path = path.absolute()
        self.env = _env(self.path)
        self.checkpoint = checkpoint
        self._fetched = 0
        self._git("init", "--quiet", "--bare", os.fspath(self.path), cwd=self.path.parent)

    def _git(self, *args: str, cwd: Path | None = None, check: bool = True) -> bytes:
        """Run git; ``checkpoint`` is called while it runs, and what it raises kills git."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                ["git", *args],
                cwd=cwd or self.path,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its helpers (git-remote-http) die with it
            )
            try:
                while True:
                    try:
                        proc.wait(timeout=0.1)
                        break
                    except subprocess.TimeoutExpired:
                        if self.checkpoint is not None:
                            self.checkpoint()
            finally:
                if proc.returncode is None:
                    with suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            out.seek(0)
            err.seek(0)
            if check and proc.returncode != 0:
                raise _GitFailed(err.read().decode(errors="replace").strip())
            return out.read()

    def has_commit(self, commit: str) -> bool:
        out = self._git("cat-file", "-t", commit, check=False)
        return out.strip() == b"commit"

    def fetch(self, url: str) -> None:
        """Every ref of ``url`` into refs of its own; raises ``_GitFailed``."""
        self._fetched += 1
        ns = f"refs/sources/{self._fetched}"
        self._git("fetch", "--quiet", "--no-tags", "--", url, f"+refs/*:{ns}/*")

    def fetch_commit(self, url: str, commit: str) -> None:
        """Just ``commit`` (and its history) from ``url``; raises ``_GitFailed``."""
        self._git("fetch", "--quiet", "--no-tags", "--", url, commit)

    def tree(self, commit: str) -> list[tuple[str, str, str, int, str]]:
        """(mode, type, object, size, path) of every entry of the commit's tree, parents first."""
        out = self._git("ls-tree", "-r", "-t", "-z", "-l", "--full-tree", commit)
        entries = []
        for record in out.split(b"\0"):
            if not record:
                continue
            head, _tab, path = record.partition(b"\t")
            mode, kind, obj, size = head.decode().split()
            name = path.decode("utf-8", "surrogateescape")
            entries.append((mode, kind, obj, int(size) if size != "-" else 0, name))
        return entries

    def submodule_urls(self, commit: str) -> dict[str, str]:
        """path -> url from the commit's ``.gitmodules`` (empty when it has none)."""
        out = self._git(
            "config", "--blob", f"{commit}:.gitmodules", "--null", "--list", check=False
        )
        names: dict[str, dict[str, str]] = {}
        for item in out.split(b"\0"):
            key, _nl, value = item.decode("utf-8", "surrogateescape").partition("\n")
            section, _dot, rest = key.partition(".")
            name, _dot, field = rest.rpartition(".")
            if section == "submodule" and name and field in ("path", "url"):
                names.setdefault(name, {})[field] = value
        return {v["path"]: v["url"] for v in names.values() if "path" in v and "url" in v}

    @contextmanager
    def blobs(self) -> Iterator[_BlobReader]:
        proc = subprocess.Popen(
            ["git", "cat-file", "--batch"],
            cwd=self.path,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            yield _BlobReader(proc.stdin, proc.stdout)
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


class _BlobReader:
    def __init__(self, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self._in = stdin
        self._out = stdout

    def read(self, obj: str) -> Iterator[bytes]:
        """The content of blob ``obj``, in blocks (must be consumed fully)."""
        self._in.write(obj.encode() + b"\n")
        self._in.flush()
        header = self._out.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            raise FilesetError(
                f"corrupt git ware: object {obj} is not a blob", category=Category.WARE_CORRUPT
            )
        left = int(header[2])
        while left:
            block = self._out.read(min(left, _BLOCK))
            if not block:
                raise FilesetError(
                    f"corrupt git ware: blob {obj} is truncated", category=Category.WARE_CORRUPT
                )
            left -= len(block)
            yield block
        self._out.read(1)  # the newline after each object


class _GitFailed(Exception):
    pass


def _address(source: str) -> str:
    """What git is given for a source: URLs as they are, local paths absolute."""
    parts = urlsplit(source)
    if parts.scheme == "file":
        path = source[len("file://") :]
        return os.path.abspath(path) if path else source
    if parts.scheme in ("http", "https", "git", "ssh"):
        return source
    if parts.scheme == "" and source:
        return os.path.abspath(source)
    raise UsageError(
        f"git ware source {source!r}: expected a repository (file://, http(s)://, git://,"
        " ssh:// or a local path)"
    )


def _resolve(base: str, url: str) -> str:
    """A submodule URL, resolved against its superproject's address when relative."""
    if not (url.startswith("./") or url.startswith("../")):
        return _address(url)
    parts = urlsplit(base)
    if parts.scheme in ("http", "https", "git", "ssh"):
        path = posixpath.normpath(posixpath.join(parts.path.rstrip("/"), url))
        return parts._replace(path=path).geturl()
    return os.path.normpath(os.path.join(base, url))


def _is_local(address: str) -> bool:
    return urlsplit(address).scheme in ("", "file")


def _submodule_address(ware: WareID, base: str, path: str, url: str) -> str:
    """Where submodule ``path`` of ``ware`` (fetched from ``base``) is fetched from.

    A repository fetched from elsewhere may not point its submodules at this
    host's own repositories: its ``.gitmodules`` would make us (root) read
    them into the ware. git refuses ``file:`` submodules by default too.
    """
    address = _resolve(base, url)
    if _is_local(address) and not _is_local(base):
        raise FilesetError(
            f"git ware {ware}: submodule {path!r} points at a repository on this host"
            f" ({url!r}), but the ware came from {base}: refused",
            category=Category.WARE_CORRUPT,
            hint="a remote repository's submodules must be remote too (http(s)://, git://,"
            " ssh://, or a relative URL)",
        )
    return address


def _fetch(repo: _Repo, ware: WareID, sources: Sequence[str]) -> str:
    """Fetch until a source has the commit; the address that had it."""
    said: list[str] = []
    answered = False
    for source in sources:
        address = _address(source)
        try:
            repo.fetch(address)
        except _GitFailed as exc:
            said.append(f"{source}: {exc}")
            continue
        answered = True
        if not repo.has_commit(ware.hash):
            # Not reachable from a ref: servers that allow it hand out a commit by hash.
            with suppress(_GitFailed):
                repo.fetch_commit(address, ware.hash)
        if repo.has_commit(ware.hash):
            return address
        said.append(f"{source}: no commit {ware.hash}")
    if not sources:
        raise UsageError(f"no repository to fetch {ware} from (give a source)")
    raise WarehouseError(
        f"{ware} not found in any of {len(sources)} source(s): {'; '.join(said)}",
        category=Category.WARE_NOT_FOUND if answered else Category.WAREHOUSE_UNAVAILABLE,
    )


def _dir(name: str, *, root: bool = False) -> Entry:
    uid = 0 if root else _UID
    return Entry(name=name, type=EntryType.DIR, mode=0o755, uid=uid, gid=uid, mtime=DEFAULT_MTIME)


def _members(
    repo: _Repo, blobs: _BlobReader, commit: str, prefix: str, subs: dict[str, str] | None
) -> Iterator[Plain]:
    """The members of one commit's tree under ``prefix``; ``subs``: gitlinks to expand."""
    yield Plain(_dir(prefix or ".", root=True))
    for mode, kind, obj, size, path in repo.tree(commit):
        name = f"{prefix}/{path}" if prefix else path
        if kind == "tree":
            yield Plain(_dir(name))
        elif kind == "commit":  # a gitlink
            if subs is None:
                yield Plain(_dir(name))
                continue
            if path not in subs:
                raise FilesetError(
                    f"corrupt git ware: gitlink at {path!r} has no entry in .gitmodules",
                    category=Category.WARE_CORRUPT,
                )
            yield from _members(repo, blobs, obj, name, None)
        elif mode == "120000":
            target = b"".join(blobs.read(obj)).decode("utf-8", "surrogateescape")
            yield Plain(
                Entry(
                    name=name, type=EntryType.SYMLINK, mode=0o644, uid=_UID, gid=_GID,
                    mtime=DEFAULT_MTIME, linkname=target,
                )
            )
        elif mode in ("100644", "100755"):
            entry = Entry(
                name=name, type=EntryType.FILE, mode=0o755 if mode == "100755" else 0o644,
                uid=_UID, gid=_GID, mtime=DEFAULT_MTIME, size=size,
            )
            yield Plain(entry, blobs.read(obj))
        else:
            raise FilesetError(
                f"corrupt git ware: {path!r} has unknown git mode {mode}",
                category=Category.WARE_CORRUPT,
            )


@contextmanager
def read_git(
    ware: WareID,
    sources: Sequence[str],
    scratch: Path,
    checkpoint: Callable[[], None] | None = None,
) -> Iterator[Iterator[Plain]]:
    """The members of commit ``ware`` (with its submodules), fetched into ``scratch``.

    ``scratch`` (an empty or missing directory) holds the bare repository;
    the caller removes it. ``checkpoint`` is called while git runs (every
    0.1 s); whatever it raises stops git and the unpack (cancellation).
    Raises WarehouseError (not found / unavailable), FilesetError
    (WARE_CORRUPT) for a tree rio could not unpack either.
    """
    if ware.packtype != GIT:
        raise UsageError(f"{ware} is not a git ware")
    scratch.mkdir(mode=0o700, exist_ok=True)
    repo = _Repo(scratch / "objects.git", checkpoint)
    base = _fetch(repo, ware, sources)
    subs = repo.submodule_urls(ware.hash)
    for path, commit in _gitlinks(repo, ware.hash).items():
        if path in subs and not repo.has_commit(commit):
            _fetch(repo, WareID(GIT, commit), [_submodule_address(ware, base, path, subs[path])])
    with repo.blobs() as blobs:
        yield _members(repo, blobs, ware.hash, "", subs)


def _gitlinks(repo: _Repo, commit: str) -> dict[str, str]:
    return {path: obj for _mode, kind, obj, _size, path in repo.tree(commit) if kind == "commit"}
