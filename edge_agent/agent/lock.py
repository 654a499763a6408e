"""One agent per outbox: an exclusive flock(2) on ``<outbox>.lock`` for as long as ``run`` serves.

Two agents on one outbox would publish every minute twice, under two seq numbers and with
different counts. The lock dies with its process (a SIGKILL or a power cut leaves nothing to
clean up), so it is never stale; the holder writes its pid into the file so a second ``run``
can name it. Readers (``edge-agent check``) never take it.

Where the lock file cannot be created (a read-only or full disk and no file left by an earlier
run) the outbox file itself is locked instead: flock(2) locks are independent of the POSIX
locks SQLite takes on it. Only where neither can be opened is there nothing to lock, and then
the outbox cannot be opened either.
"""

import errno
import fcntl
import os
from pathlib import Path

from ..common.errors import EdgeAgentError

# The filesystem, not the user, refuses a new file: the outbox may still be there to lock.
_NO_NEW_FILE = (errno.EROFS, errno.ENOSPC, errno.EDQUOT)


class AlreadyRunning(EdgeAgentError):
    """Another process holds the outbox; the message names it."""


def _describe(pid_text):
    pid = pid_text.strip()
    if not pid.isdigit():
        return "pid unknown"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return f"pid {pid}"
    return f"pid {pid}: {cmdline[:200]}" if cmdline else f"pid {pid}"


class OutboxLock:
    """Held from ``acquire()`` until ``release()`` or the end of the process."""

    def __init__(self, outbox_path):
        self.outbox_path = Path(outbox_path)
        self.path = self.outbox_path.with_name(self.outbox_path.name + ".lock")
        self._fd = None

    def _open(self):
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600), True
        except OSError as exc:
            if exc.errno not in _NO_NEW_FILE and exc.errno != errno.EACCES:
                raise
        for candidate in (self.path, self.outbox_path):
            try:
                return os.open(candidate, os.O_RDONLY | os.O_CLOEXEC), False
            except FileNotFoundError:
                continue
        raise OSError(errno.EROFS, "neither the lock file nor the outbox can be created here")

    def acquire(self) -> "OutboxLock":
        """Take the lock, or raise AlreadyRunning naming the holder; OSError when nothing can be opened."""
        try:
            fd, writable = self._open()
        except OSError as exc:
            raise EdgeAgentError(f"cannot lock the outbox {self.outbox_path}: {self.path}: "
                                 f"{exc.strerror or exc}; is the state directory writable?") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = _describe(os.pread(fd, 64, 0).decode(errors="replace"))
            except OSError:
                holder = "pid unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"outbox {self.outbox_path} is locked by a running agent ({holder}); two agents on one "
                "outbox would send every minute twice: stop that one first (systemctl stop edge-agent), "
                "or give this one its own outbox.path") from None
        if writable:
            text = f"{os.getpid()}\n".encode()
            try:
                # Over the old pid first: on a full disk the file's one block is already there.
                os.pwrite(fd, text, 0)
                os.ftruncate(fd, len(text))
            except OSError:
                pass  # the lock holds all the same; only the pid goes unnamed
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
