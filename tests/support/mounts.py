"""Small real filesystems for storage-fault tests: a tmpfs that fills, an ext4 image that fails read-only.

Both need root (mount(2)); ``skip_unless_mountable()`` turns their absence into a skip with the
reason. Every mount is undone by ``close()``, lazily where a process still holds files on it.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def _run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


class _Mount:
    def __init__(self, where):
        self.where = Path(where)
        self.device = None

    def close(self):
        if _run("umount", str(self.where)).returncode:
            _run("umount", "-l", str(self.where))
        if self.device:
            _run("losetup", "-d", self.device)
        shutil.rmtree(self.where, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class Tmpfs(_Mount):
    """A tmpfs of ``size`` (e.g. "256k") at a fresh directory; ``resize()`` gives it room again."""

    def __init__(self, size, parent=None):
        super().__init__(tempfile.mkdtemp(prefix="tmpfs-", dir=parent))
        result = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(self.where))
        if result.returncode:
            self.where.rmdir()
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")

    def resize(self, size):
        result = _run("mount", "-o", f"remount,size={size}", str(self.where))
        assert result.returncode == 0, result.stderr

    def fill(self):
        """Take every free block, as a camera's neighbour filling the SD card would."""
        _run("dd", "if=/dev/zero", f"of={self.where / 'ballast'}", "bs=4k")


class FailingExt4(_Mount):
    """An ext4 image mounted with errors=remount-ro; ``fail()`` makes the kernel turn it read-only,
    as it does to a failing SD card (open files and all, which a plain remount refuses)."""

    def __init__(self, size_mb=16, parent=None):
        super().__init__(tempfile.mkdtemp(prefix="ext4-", dir=parent))
        self.image = self.where.with_suffix(".img")
        for command in (("truncate", "-s", f"{size_mb}M", str(self.image)),
                        ("mkfs.ext4", "-q", "-F", str(self.image))):
            result = _run(*command)
            if result.returncode:
                self.where.rmdir()
                pytest.skip(f"cannot make an ext4 image here: {result.stderr.strip()}")
        attach = _run("losetup", "--find", "--show", str(self.image))
        if attach.returncode:
            self.where.rmdir()
            self.image.unlink()
            pytest.skip(f"no loop device here: {attach.stderr.strip()}")
        self.device = attach.stdout.strip()
        result = _run("mount", "-t", "ext4", "-o", "errors=remount-ro", self.device, str(self.where))
        if result.returncode:
            _run("losetup", "-d", self.device)
            self.where.rmdir()
            self.image.unlink()
            pytest.skip(f"cannot mount ext4 here: {result.stderr.strip()}")

    def fail(self):
        name = Path(self.device).name
        Path(f"/sys/fs/ext4/{name}/trigger_fs_error").write_text("test: the SD card fails\n")

    def close(self):
        super().close()
        self.image.unlink(missing_ok=True)
