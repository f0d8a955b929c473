"""Where things are: the workspace (nearest ``.timeless/``) and the module (nearest ``module.tl``).

As reach found them (gadgets/layout/find.go, gadgets/workspace/workspace.go):

* the **workspace** is the nearest ancestor of the working directory holding
  a ``.timeless`` directory; ``workspace.tl`` is never read;
* the **module** is the nearest ancestor (up to the workspace root) holding
  a ``module.tl`` file, or, given a path, exactly that directory;
* a module's **name** is its path relative to the workspace root
  (``unnamed`` at the root), and must be a valid module name.

Inside ``.timeless/``: ``catalog/<module>/lineage.tl`` (+ ``mirrors.tl``),
``candidates/default/<module>/lineage.tl``, and ``warehouse/`` (the staging
warehouse, ``ca+file``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repeatr.errors import ModuleError
from repeatr.module.names import module_name_problem

MODULE_FILE = "module.tl"
#: The name of a module at the workspace root.
UNNAMED = "unnamed"
#: The only saga reach had.
SAGA = "default"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def dot(self) -> Path:
        return self.root / ".timeless"

    @property
    def catalog_root(self) -> Path:
        return self.dot / "catalog"

    def candidates_root(self, saga: str = SAGA) -> Path:
        return self.dot / "candidates" / saga

    @property
    def staging_dir(self) -> Path:
        return self.dot / "warehouse"

    def make_staging(self) -> None:
        """Make the staging warehouse's directory when missing (blocking).

        ``ModuleError`` when ``.timeless`` or ``.timeless/warehouse`` is a
        symlink or not a directory: wares are never stored through a link
        that came with the workspace (``repeatr.nofollow``).
        """
        from repeatr.nofollow import SymlinkInPath, open_dir

        try:
            with open_dir(self.root, [".timeless", "warehouse"]):
                pass
        except SymlinkInPath as exc:
            raise ModuleError(
                f"the staging warehouse {self.staging_dir}: {exc.path} is {exc.what};"
                " repeatr does not write through symlinks in a workspace's .timeless"
            ) from exc
        except OSError as exc:
            raise ModuleError(
                f"cannot make the staging warehouse {self.staging_dir}: {exc.strerror or exc}"
            ) from exc

    @property
    def staging_url(self) -> str:
        """``ca+file://<root>/.timeless/warehouse`` (reach's StagingWarehouseLoc)."""
        return f"ca+file://{self.staging_dir}"


@dataclass(frozen=True)
class ModuleLayout:
    workspace: Workspace
    root: Path

    @property
    def file(self) -> Path:
        return self.root / MODULE_FILE

    @property
    def name(self) -> str:
        """Its path under the workspace root (``unnamed`` at the root); raises ``ModuleError``."""
        if self.root == self.workspace.root:
            return UNNAMED
        name = self.root.relative_to(self.workspace.root).as_posix()
        if problem := module_name_problem(name):
            raise ModuleError(
                f"{name!r} (the module's path in the workspace) is not a valid"
                f" module name: {problem}"
            )
        return name


def find_workspace(start: Path) -> Workspace:
    """The nearest ancestor of ``start`` (itself included) holding ``.timeless/``."""
    start = Path(start).absolute()
    for directory in (start, *start.parents):
        dot = directory / ".timeless"
        if dot.is_dir():
            return Workspace(directory)
        if dot.exists():
            raise ModuleError(f"{dot} exists but is not a directory")
    raise ModuleError(
        f"no workspace found: neither {start} nor any parent holds a .timeless directory",
        hint="create one with `mkdir .timeless` at the root of your project",
    )


def _inside(ws: Workspace, directory: Path) -> None:
    if directory != ws.root and ws.root not in directory.parents:
        raise ModuleError(
            "module path must be contained within a workspace root"
            f" (workspace root is {str(ws.root)!r})"
        )


def find_module(ws: Workspace, start: Path) -> ModuleLayout:
    """The nearest directory from ``start`` up to the workspace root holding ``module.tl``."""
    start = Path(start).absolute()
    _inside(ws, start)
    for directory in (start, *start.parents):
        if (directory / MODULE_FILE).is_file():
            return ModuleLayout(ws, directory)
        if directory == ws.root:
            break
    raise ModuleError("no module found")


def expect_module(ws: Workspace, directory: Path) -> ModuleLayout:
    """Exactly ``directory`` (no search), which must hold ``module.tl``."""
    directory = Path(directory).absolute()
    if directory.name == MODULE_FILE and directory.is_file():
        directory = directory.parent
    _inside(ws, directory)
    if not (directory / MODULE_FILE).is_file():
        raise ModuleError(f"no module found: {directory} has no {MODULE_FILE}")
    return ModuleLayout(ws, directory)


def locate(cwd: Path, path: str | None) -> ModuleLayout:
    """As reach emerge looked: the workspace from ``cwd``; the module at ``path`` or ``cwd``."""
    cwd = Path(cwd).absolute()
    ws = find_workspace(cwd)
    if path is None:
        return find_module(ws, cwd)
    return expect_module(ws, Path(_normal(cwd / path)))


def _normal(path: Path) -> str:
    import os.path

    return os.path.normpath(path)
