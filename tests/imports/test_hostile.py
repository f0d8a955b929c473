"""Hostile layers: nothing is ever written outside the import's own temp dir."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from repeatr.errors import Category, RepeatrError
from repeatr.imports import import_source

from .images import TAR, TAR_GZIP, hand_layout, member, tar_layer

pytestmark = pytest.mark.root


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """``work`` (the import's workdir) and ``outside`` (must stay empty) under tmp_path."""
    (tmp_path / "work").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path


def _import_fails(area: Path, layers: list[bytes]) -> RepeatrError:
    layout = area / "layout"
    hand_layout(layout, [(data, TAR_GZIP) for data in layers])
    with pytest.raises(RepeatrError) as err:
        import_source(f"oci:{layout}", workdir=area / "work")
    assert os.listdir(area / "work") == []  # cleaned up
    assert os.listdir(area / "outside") == []  # never written
    return err.value


def test_dotdot_member_is_rejected(area: Path) -> None:
    # workdir/repeatr-import-*/rootfs/../../../outside/escape
    escape = tar_layer([(member("ok"), b"x"), (member("../../../outside/escape"), b"pwned\n")])
    err = _import_fails(area, [escape])
    assert err.category is Category.WARE_CORRUPT
    assert not (area / "escape").exists() and not (area / "work" / "escape").exists()


def test_absolute_member_is_rejected(area: Path) -> None:
    err = _import_fails(area, [tar_layer([(member(f"{area}/outside/abs"), b"pwned\n")])])
    assert err.category is Category.WARE_CORRUPT


def test_write_through_a_symlink_from_a_lower_layer_is_rejected(area: Path) -> None:
    lower = tar_layer([(member("evil", tarfile.SYMTYPE, link=f"{area}/outside"), None)])
    upper = tar_layer([(member("evil/pwned"), b"pwned\n")])
    err = _import_fails(area, [lower, upper])
    assert err.category is Category.WARE_CORRUPT


def test_write_through_a_symlink_in_the_same_layer_is_rejected(area: Path) -> None:
    layer = tar_layer([
        (member("rel", tarfile.SYMTYPE, link="../../../outside"), None),
        (member("rel/pwned"), b"pwned\n"),
    ])
    assert _import_fails(area, [layer]).category is Category.WARE_CORRUPT


def test_hardlinks_cannot_reach_outside(area: Path) -> None:
    secret = area / "outside-secret"
    secret.write_bytes(b"secret\n")
    for link in ("../../../outside-secret", f"{secret}", "evil/outside-secret"):
        layer = tar_layer([
            (member("evil", tarfile.SYMTYPE, link=os.fspath(area)), None),
            (member("copy", tarfile.LNKTYPE, link=link), None),
        ])
        err = _import_fails(area, [layer])
        assert err.category is Category.WARE_CORRUPT, link
        (area / "layout").rename(area / f"layout-{len(os.listdir(area))}")


def test_whiteout_of_dotdot_is_rejected(area: Path) -> None:
    layer = tar_layer([(member("etc/.wh..."), b"")])
    assert _import_fails(area, [layer]).category is Category.WARE_CORRUPT


def test_digest_naming_a_path_outside_blobs_is_rejected(area: Path) -> None:
    layout = area / "layout"
    hand_layout(layout, [(tar_layer([(member("a"), b"a")]), TAR)])
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["digest"] = "sha256:../../../outside/x"
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(RepeatrError) as err:
        import_source(f"oci:{layout}", workdir=area / "work")
    assert err.value.category is Category.WARE_CORRUPT


def test_whiteouts_in_a_lower_layer_do_not_hide_upper_content(area: Path) -> None:
    """Order matters: a whiteout hides what is below it, never what comes later."""
    layout = area / "layout"
    lower = tar_layer([(member(".wh.a"), b""), (member("b"), b"b")])
    upper = tar_layer([(member("a"), b"a")])
    hand_layout(layout, [(lower, TAR_GZIP), (upper, TAR_GZIP)])
    one = area / "one"
    hand_layout(one, [(tar_layer([(member("a"), b"a"), (member("b"), b"b")]), TAR)])
    assert import_source(f"oci:{layout}", workdir=area / "work") == import_source(
        f"oci:{one}", workdir=area / "work"
    )
