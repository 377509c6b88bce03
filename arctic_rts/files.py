"""Durable, atomic file replacement: the one copy for the whole package.

A product file (inventory GeoPackage, weights, checkpoint, manifest entry) is never written in
place. It is written to a temporary file in the target's folder (``os.replace`` is atomic only
within one file system), flushed to disk with ``fsync``, renamed over the target, and the folder
is flushed too, so that after a crash or power loss the target is either the old file or the
complete new one, never a torn mix or a name pointing at unflushed data.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's, or a folder's, data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Flush ``tmp``, rename it over ``target`` and flush the folder that holds the new name.

    Args:
        tmp: The complete new file, in the same folder (file system) as ``target``.
        target: The file to replace (it need not exist).
    """
    fsync_path(tmp)
    os.replace(tmp, target)
    fsync_path(Path(target).parent)


def temporary_sibling(target: str | os.PathLike[str], suffix: str = "") -> Path:
    """The temporary name beside ``target`` that this process writes: ``.NAME.tmp-PID[suffix]``.

    The name is hidden, unique per process and ends in ``suffix`` (GDAL, for one, warns about
    a GeoPackage without the ``.gpkg`` extension).
    """
    target = Path(target)
    return target.with_name(f".{target.name}.tmp-{os.getpid()}{suffix}")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on a normal exit it durably replaces ``target``.

    If the block raises, ``target`` is left as it was; the temporary file is removed either
    way. The block may start from a copy of ``target`` (the inventory does) or write anew.

    Args:
        target: The file to replace.
        suffix: Ending of the temporary name (see :func:`temporary_sibling`).
    """
    tmp = temporary_sibling(target, suffix)
    try:
        yield tmp
        replace_durably(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary folder path to fill; on a normal exit it replaces the folder ``target``.

    If the block raises (or is interrupted), the temporary folder is removed and ``target`` is
    left as it was, so a failed build never leaves a partial store (a zarr dataset) behind. An
    existing ``target`` is replaced: moved aside, the new folder renamed in, the old removed.

    Args:
        target: The folder to create or replace.
        suffix: Ending of the temporary name (zarr readers look at ``.zarr``).
    """
    import shutil

    tmp = temporary_sibling(target, suffix)
    old = temporary_sibling(target, ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        if os.path.lexists(target):
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_path(Path(target).parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def atomic_write(
    target: str | os.PathLike[str], writer: Callable[[Path], object], suffix: str = ""
) -> Path:
    """Write ``target`` atomically and durably: ``writer(tmp)`` writes the whole file to ``tmp``.

    Args:
        target: The file to write or replace.
        writer: Writes the complete content to the path it is given (its result is ignored).
        suffix: Ending of the temporary name, for writers that choose a format by extension.

    Returns:
        ``target`` as a :class:`~pathlib.Path`.
    """
    with atomic_path(target, suffix) as tmp:
        writer(tmp)
    return Path(target)


def relative_name(path: str | os.PathLike[str] | None, root: Path) -> str | None:
    """``path`` relative to ``root`` when it lies below it, else its last component."""
    if path is None:
        return None
    p = Path(path).resolve()
    try:
        return p.relative_to(root.resolve()).as_posix()
    except ValueError:
        return p.name


#: Longest name :func:`safe_file_name` returns, in bytes: room is left under the usual 255-byte
#: limit for a suffix and for the temporary name ``.NAME.tmp-PID.suffix`` beside it.
SAFE_NAME_BYTES = 120


def safe_file_name(name: str) -> str:
    """A file name for an identifier from outside (a STAC item id): it cannot escape its folder,
    be too long, be hidden, or look like the temporary files that are cleaned up as stale.

    Characters other than ``A-Z a-z 0-9 . _ -`` become ``_`` (so no ``/``), a leading ``.``
    becomes ``_`` (so no ``.``, ``..`` or ``.x.tmp-N``), and a name longer than
    :data:`SAFE_NAME_BYTES` is cut. Whenever the name was changed, 16 hex digits of the
    identifier's sha256 are appended, so that two identifiers never share a file. An identifier
    that needs none of this is its own name, unless it ends like such a digest (``-`` and 16
    hex digits): it could be another identifier's changed name, so it gets its own digest too.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if safe.startswith("."):
        safe = "_" + safe[1:]
    lookalike = re.search(r"-[0-9a-f]{16}$", name) is not None
    if safe == name and len(safe) <= SAFE_NAME_BYTES and not lookalike:
        return safe
    digest = hashlib.sha256(name.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]
    return f"{safe[: SAFE_NAME_BYTES - 17]}-{digest}"


@contextlib.contextmanager
def new_folders_removed_on_failure(*folders: str | os.PathLike[str]) -> Iterator[None]:
    """If the block raises, remove those of ``folders`` that did not exist before it, with
    their subfolders, where they are empty: a failed command leaves no empty folder behind,
    and never loses a file (only empty folders are removed)."""
    new = [Path(f) for f in folders if not Path(f).exists()]
    try:
        yield
    except BaseException:
        for folder in new:
            subfolders = [p for p in folder.rglob("*") if p.is_dir()] if folder.is_dir() else []
            for path in [*sorted(subfolders, key=lambda p: len(p.parts), reverse=True), folder]:
                with contextlib.suppress(OSError):  # not empty, or gone: left as it is
                    path.rmdir()
        raise
