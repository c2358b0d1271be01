"""Writing files so that a crash or Ctrl-C never leaves a half-written one: write a temporary file beside the
target, then rename it over the target (atomic on POSIX and Windows file systems)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "write_text", "output_folder_problem"]


def _file_mode() -> int:
    """Permissions of a new file under the current umask (mkstemp would leave 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, write) -> None:
    """Create or replace `path` with what `write(tmp_path)` writes.

    Args:
        path: the target file; its folder is created when missing.
        write: a function writing the whole file to the path it is given (a temporary file in the same folder).
    The target is either the old file or the complete new one, never a part; the temporary file is removed
    when `write` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path, text: str, encoding: str = "utf-8") -> None:
    """A text file, atomically (`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding=encoding))


def output_folder_problem(path) -> str | None:
    """Why `path` cannot become an output folder, or None when it can (checked before any long work starts).

    It can when it is a folder we may write in, or when it does not exist and its nearest existing ancestor is
    such a folder (it is then created when the outputs are written).
    """
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            return "exists and is not a folder"
        return None if os.access(p, os.W_OK | os.X_OK) else "is not writable"
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return None
