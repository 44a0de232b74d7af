"""Secrets at rest: the bridge's files are its own (0600), its folders too (0700)."""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE, DIR_MODE = 0o600, 0o700


def private_dir(path: Path) -> None:
    """Make the folder (and missing parents) readable by the bridge's user only."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)


def create_private(path: Path) -> None:
    """Create an empty file readable by the bridge's user only, unless it exists (whose mode
    `ent-bridge doctor` reports rather than changes behind the operator's back)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
    except FileExistsError:
        pass


def write_private(path: Path, text: str) -> None:
    """Write a file holding secrets (config, registration): 0600 before the first byte lands."""
    create_private(path)
    os.chmod(path, FILE_MODE)
    path.write_text(text, encoding="utf-8")


def private_files_in(folder: Path, pattern: str) -> None:
    """Files another library made with the process's umask, made the bridge's own."""
    for path in folder.glob(pattern):
        os.chmod(path, FILE_MODE)


def too_open(path: Path, *, allowed: int = FILE_MODE) -> int | None:
    """The file's mode when someone beyond `allowed` may read or write it, else None."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        return None
    return mode if mode & ~allowed else None
