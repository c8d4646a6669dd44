"""Atomic file and folder writes: a reader sees the old version or the new one, never a mix."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces `target`.

    The swap is two renames (old -> `.name.old`, tmp -> name). A crash between them leaves the
    previous version at `.name.old`, which `recover_directory` puts back. A failure while
    filling the folder removes the temporary folder and leaves `target` untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the finished folder `tmp` to `target`, replacing any previous version."""
    tmp, target = Path(tmp), Path(target)
    _fsync_tree(tmp)
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


def recover_directory(target: str | os.PathLike) -> Path | None:
    """Put back the previous version of `target` if a swap was cut between its two renames."""
    target = Path(target)
    old = target.parent / f".{target.name}.old"
    if not target.exists() and old.exists():
        os.replace(old, target)
    return target if target.exists() else None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
