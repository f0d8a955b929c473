"""The kernel calls (``repeatr.linux.libc``, made by the compiled ``repeatr/linux/_libc.c``).

A failing call raises the ``OSError`` it raised when ctypes made it: its
errno (and so its subclass) and ``<call>(<args>): <strerror>`` naming the
call and its arguments (``mount_setattr`` and ``openat2`` now name theirs;
ctypes showed pointers). On a real kernel, in the test's own tmp dir. And no
run imports ctypes for them: not the server's and helper's modules, not a
seccomp program taken from the cache.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from repeatr.executors import seccomp
from repeatr.linux import _libc, libc, libseccomp


def _raises(call: Callable[..., object], *args: object, **kwargs: object) -> OSError:
    with pytest.raises(OSError) as info:
        call(*args, **kwargs)
    return info.value


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "mnt"
    where.mkdir()
    libc.mount("tmpfs", where, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=64k,mode=755")
    try:
        yield where
    finally:
        libc.umount2(where, libc.MNT_DETACH)


# --- failures: the same OSError as before ---------------------------------------
@pytest.mark.root
def test_mount_failure(tmp_path: Path) -> None:
    src, dst = tmp_path / "missing", tmp_path / "also-missing"
    e = _raises(libc.mount, src, dst, None, libc.MS_BIND)
    assert isinstance(e, FileNotFoundError) and e.errno == errno.ENOENT
    assert e.strerror == f"mount({str(src)!r}, {str(dst)!r}, None, 4096, None): {os.strerror(2)}"
    e = _raises(libc.mount, None, dst, "tmpfs", 0, "size=1m")
    assert e.strerror == f"mount(None, {str(dst)!r}, 'tmpfs', 0, 'size=1m'): {os.strerror(2)}"


@pytest.mark.root
def test_umount2_failure(tmp_path: Path) -> None:
    e = _raises(libc.umount2, tmp_path)  # not a mount point
    assert e.errno == errno.EINVAL
    assert e.strerror == f"umount2({str(tmp_path)!r}, 0): {os.strerror(errno.EINVAL)}"
    e = _raises(libc.umount2, os.fsencode(tmp_path / "missing"), libc.MNT_DETACH)
    assert isinstance(e, FileNotFoundError)
    assert e.strerror == f"umount2({str(tmp_path / 'missing')!r}, 2): {os.strerror(2)}"


@pytest.mark.root
def test_namespace_failures() -> None:
    e = _raises(libc.unshare, -1)  # unknown flags: refused before anything changes
    assert (e.errno, e.strerror) == (errno.EINVAL, f"unshare(-1): {os.strerror(errno.EINVAL)}")
    fd = os.open("/", os.O_RDONLY | os.O_CLOEXEC)  # not a namespace
    try:
        e = _raises(libc.setns, fd, libc.CLONE_NEWNET)
    finally:
        os.close(fd)
    assert e.errno == errno.EINVAL
    assert e.strerror == f"setns({fd}, {libc.CLONE_NEWNET}): {os.strerror(errno.EINVAL)}"


def test_openat2_failure_and_confinement(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("inside\n")
    (tmp_path / "link").symlink_to("/etc/passwd")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = libc.openat2(root, "link", os.O_RDONLY, libc.RESOLVE_IN_ROOT)
        try:
            assert os.read(fd, 100) == b"inside\n"  # the root's /etc, not the host's
            assert os.get_inheritable(fd) is False
        finally:
            os.close(fd)
        e = _raises(libc.openat2, root, "../x", os.O_PATH, libc.RESOLVE_BENEATH)
        assert e.errno == errno.EXDEV
        flags = os.O_PATH | os.O_CLOEXEC
        assert e.strerror == (
            f"openat2({root}, '../x', flags={flags:#o}, resolve=0x8, mode=0o0): "
            f"{os.strerror(errno.EXDEV)}"
        )
        e = _raises(libc.openat2, root, "missing", os.O_RDONLY, libc.RESOLVE_IN_ROOT)
        assert isinstance(e, FileNotFoundError)
    finally:
        os.close(root)


@pytest.mark.root
def test_other_failures(tmp_path: Path) -> None:
    e = _raises(libc.mount_setattr, libc.AT_FDCWD, tmp_path / "missing", 0,
                attr_set=libc.MOUNT_ATTR_RDONLY)
    assert isinstance(e, FileNotFoundError)
    assert e.strerror == (
        f"mount_setattr(-100, {str(tmp_path / 'missing')!r}, 0, attr_set=0x1, attr_clr=0x0): "
        f"{os.strerror(2)}"
    )
    e = _raises(libc.prctl, 9999)
    assert e.strerror == f"prctl(9999, 0, 0, 0, 0): {os.strerror(errno.EINVAL)}"
    e = _raises(libc.sethostname, "x" * 65)  # longer than __NEW_UTS_LEN: nothing changes
    assert e.strerror == f"sethostname({'x' * 65!r}, 65): {os.strerror(errno.EINVAL)}"
    e = _raises(libc.link_up, "nosuchlink0")  # the socket is opened, the ioctl fails
    assert e.errno == errno.ENODEV
    assert e.strerror == f"ioctl(SIOCSIFFLAGS, 'nosuchlink0', IFF_UP): {os.strerror(19)}"


def test_bad_arguments_never_reach_the_kernel(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="null"):
        libc.umount2(os.fsencode(tmp_path) + b"\0/etc")
    with pytest.raises(TypeError):
        _libc.umount2(str(tmp_path), 0)  # type: ignore[arg-type]


# --- what works ---------------------------------------------------------------------
@pytest.mark.root
def test_mount_setattr_and_umount(tmpfs: Path) -> None:
    (tmpfs / "f").write_text("x")
    libc.mount_setattr(libc.AT_FDCWD, tmpfs, 0, attr_set=libc.MOUNT_ATTR_RDONLY)
    with pytest.raises(OSError) as info:
        (tmpfs / "g").write_text("y")
    assert info.value.errno == errno.EROFS
    libc.mount_setattr(libc.AT_FDCWD, tmpfs, 0, attr_clr=libc.MOUNT_ATTR_RDONLY)
    (tmpfs / "g").write_text("y")


def test_prctl_returns_the_result() -> None:
    pr_get_dumpable = 3  # /usr/include/linux/prctl.h: the value is the result
    assert libc.prctl(pr_get_dumpable) in (0, 1, 2)


def test_seccomp_version_without_ctypes() -> None:
    assert libseccomp.version()[0] == 2
    assert isinstance(_libc.seccomp_version(), tuple)


# --- no ctypes in a run ----------------------------------------------------------------
def _ctypes_after(code: str) -> str:
    probe = f"{code}\nimport sys\nprint(sorted(m for m in sys.modules if 'ctypes' in m))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    return out.stdout.strip()


def test_server_and_helper_modules_import_no_ctypes() -> None:
    code = (
        "import repeatr.executors.forkserver, repeatr.executors.sandbox, "
        "repeatr.executors.seccomp, repeatr.net.setup\n"
        "from repeatr.linux import libc, libseccomp\n"
        "libseccomp.version()"
    )
    assert _ctypes_after(code) == "[]"


def test_a_cached_seccomp_program_needs_no_ctypes(tmp_path: Path) -> None:
    cache = tmp_path / "seccomp"
    cache.mkdir(mode=0o700)
    program = seccomp.for_capabilities(["CAP_CHOWN"]).bpf(cache)  # compiled: ctypes here
    assert list(cache.glob("*.bpf"))
    code = (
        "from pathlib import Path\n"
        "from repeatr.executors import seccomp\n"
        f"p = seccomp.for_capabilities(['CAP_CHOWN']).bpf(Path({os.fspath(cache)!r}))\n"
        f"assert p == {program!r}, 'not the cached program'"
    )
    assert _ctypes_after(code) == "[]"
