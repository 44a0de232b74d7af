"""The policies in force: one validated value, held by the running bridge, swapped whole on reload.

A reload copies the policies folder, validates the copy (the same `check_folder` as `policy
check`), and only then makes it the value in force: a file edited between the check and the use
can't slip in, and a broken one leaves the previous value. The copy is pinned under its digest:
a sync in a child process, a retention sweep and moderation all read that same copy.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import BridgeError, InputError
from bridge.policy.folder import check_folder
from bridge.policy.model import Policies
from bridge.rooms.templates import RoomTemplate

MAX_FOLDER_BYTES = 16 * 1024 * 1024  # templates, profiles and word lists: kilobytes in practice


@dataclass(frozen=True)
class PolicySet:
    templates: dict[str, RoomTemplate]
    policies: Policies
    folder: Path  # the pinned copy these were read from
    digest: str


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    total = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        total += len(data)
        if total > MAX_FOLDER_BYTES:
            raise InputError(f"the policies folder holds more than {MAX_FOLDER_BYTES} bytes", file=str(folder))
        h.update(str(path.relative_to(folder)).encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()[:16]


class PolicyHolder:
    """`current` is the value in force; `reload()` replaces it or says why not."""

    def __init__(self, folder: Path, *, pins: Path | None = None) -> None:
        """folder: where admins edit the policies; pins: where validated copies are kept (None:
        the folder is used in place, e.g. by one-shot commands that read it once)."""
        self.folder = folder
        self.pins = pins
        self._current: PolicySet | None = None

    @property
    def loaded(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> PolicySet:
        if self._current is None:
            raise BridgeError("no policies loaded yet")
        return self._current

    def reload(self) -> str | None:
        """Validate and swap in the folder's policies; None when done, else the error (the
        previous value stays in force)."""
        try:
            self._current = self._load()
        except (BridgeError, OSError) as exc:
            return str(exc)
        return None

    def _load(self) -> PolicySet:
        if self.pins is None:
            templates, policies = check_folder(self.folder)
            return PolicySet(templates, policies, self.folder, _digest(self.folder))
        self.pins.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.pins))
        try:
            copy = staging / "p"
            shutil.copytree(self.folder, copy, symlinks=False)
            digest = _digest(copy)
            pinned = self.pins / digest
            if not pinned.exists():
                copy.rename(pinned)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        try:
            templates, policies = check_folder(pinned)  # the copy is what gets validated, and used
        except BridgeError:
            if self._current is None or self._current.digest != digest:
                shutil.rmtree(pinned, ignore_errors=True)
            raise
        self._prune(keep={digest, self._current.digest if self._current else ""})
        return PolicySet(templates, policies, pinned, digest)

    def _prune(self, *, keep: set[str]) -> None:
        # The previous copy stays: a sync started before this reload may still be reading it.
        assert self.pins is not None
        for old in self.pins.iterdir():
            if old.is_dir() and old.name not in keep and not old.name.startswith(".staging-"):
                shutil.rmtree(old, ignore_errors=True)
