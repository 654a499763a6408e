"""The dashboard's output directory as units of files: each written whole, redrawn only when its inputs change.

A unit is the files drawn together from the same inputs (a page and its charts), summed up in a
fingerprint. Each folder's ``.manifest.json`` records its units' fingerprints and files, so
neither this process nor the next writes a unit again whose fingerprint is the same. Invariants:

- every file is written under a temporary name (``.tmp-NAME``) beside it and renamed, so a reader
  never sees half a file; ``remove_leftovers`` deletes the temporaries a crash left behind;
- a unit's files are written in the order given, and the manifest learns of them only once all
  are written: a manifest never names a file that was not written;
- the files a unit no longer has, and the files of a unit that is dropped, are deleted with it,
  so nothing no longer drawn stays behind;
- a failure to write or delete is a ``DashboardError`` naming the path.

This module knows folders, units and files, never what a page is or which units a page needs.
The rules, with what was measured: docs/dashboard.md.
"""

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from ..common.errors import EdgeAgentError

MANIFEST = ".manifest.json"
TEMPORARY_PREFIX = ".tmp-"


class DashboardError(EdgeAgentError):
    """The output directory cannot be written; the text names it and says why."""


def fingerprint_of(*parts) -> str:
    """A short hash of everything a unit is drawn from; the same in every process for the same parts."""
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()[:12]


@contextmanager
def _writing(path):
    try:
        yield
    except OSError as exc:
        raise DashboardError(f"dashboard output {path} cannot be written: {exc.strerror or exc}") from None


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f"{TEMPORARY_PREFIX}{path.name}")
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)


class Manifest:
    """What each unit of one folder was last drawn from: ``{unit: [fingerprint, files]}``."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.units = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.units = {}
        self.dirty = False

    def current(self, unit: str, fingerprint: str) -> bool:
        entry = self.units.get(unit)
        return entry is not None and entry[0] == fingerprint

    def record(self, unit: str, fingerprint: str, files: list[str]) -> list[str]:
        """Note the unit's new files; returns its old files that are no longer among them."""
        old = self.units.get(unit, [None, []])[1]
        self.units[unit] = [fingerprint, files]
        self.dirty = True
        return [name for name in old if name not in files]

    def drop(self, unit: str) -> list[str]:
        self.dirty = True
        return self.units.pop(unit, [None, []])[1]


class SiteFiles:
    """The directory ``root``: its manifests (each read once, saved when changed) and every write and deletion.

    Paths are relative to ``root``, with ``/``. ``written`` counts the files of the units written,
    by suffix, until cleared: what a refresh reports it drew.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.written: Counter[str] = Counter()
        self._manifests: dict[Path, Manifest] = {}

    def check_writable(self) -> None:
        """Fail early, naming the directory, instead of on the first write."""
        probe = self.root / f".write-test-{os.getpid()}"
        with _writing(self.root):
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()

    def manifest(self, folder: str) -> Manifest:
        path = self.root / folder / MANIFEST
        manifest = self._manifests.get(path)
        if manifest is None:
            manifest = self._manifests[path] = Manifest(path)
        return manifest

    def write_unit(self, manifest: Manifest, unit: str, fingerprint: str, files: dict[str, str]) -> None:
        """Write a unit's files in their order, then delete the files it no longer has."""
        for relative, text in files.items():
            self.write(relative, text)
            self.written[Path(relative).suffix] += 1
        self.remove(manifest.record(unit, fingerprint, list(files)))

    def drop_unit(self, manifest: Manifest, unit: str) -> None:
        """Delete the unit with its files, if the manifest has it."""
        if unit in manifest.units:
            self.remove(manifest.drop(unit))

    def drop_units(self, manifest: Manifest, prefix: str, keep: set[str]) -> None:
        """Delete the units named ``prefix...`` that are not in ``keep``, with their files."""
        for unit in [unit for unit in manifest.units if unit.startswith(prefix) and unit not in keep]:
            self.remove(manifest.drop(unit))

    def drop_folder(self, folder: str) -> None:
        """Delete every unit of ``folder`` with its files, and the folder's manifest."""
        manifest = self.manifest(folder)
        for unit in list(manifest.units):
            self.remove(manifest.drop(unit))
        self.remove([f"{folder}/{MANIFEST}"])
        self._manifests.pop(manifest.path, None)

    def tracked_folders(self, pattern: str) -> list[str]:
        """The folders matching the glob ``pattern`` that hold a manifest."""
        return [path.parent.relative_to(self.root).as_posix() for path in self.root.glob(f"{pattern}/{MANIFEST}")]

    def existing(self, pattern: str) -> list[str]:
        """The files matching the glob ``pattern``."""
        return [path.relative_to(self.root).as_posix() for path in self.root.glob(pattern)]

    def save_manifests(self) -> None:
        for manifest in self._manifests.values():
            if manifest.dirty:
                _write_atomically(manifest.path, json.dumps(manifest.units, separators=(",", ":")))
                manifest.dirty = False

    def write(self, relative: str, text: str) -> None:
        _write_atomically(self.root / relative, text)

    def remove(self, relatives: Iterable[str]) -> None:
        for relative in relatives:
            path = self.root / relative
            with _writing(path):
                path.unlink(missing_ok=True)

    def remove_leftovers(self) -> None:
        """The temporaries of writes a crash interrupted."""
        self.remove([path.relative_to(self.root).as_posix() for path in self.root.rglob(f"{TEMPORARY_PREFIX}*")])
