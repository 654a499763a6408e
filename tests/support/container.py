"""A real systemd booted in a container (systemd-nspawn), for tests of units and deployment.

The root file system is a Debian bookworm made once with debootstrap and cached; each
container runs on a throw-away copy of it (--ephemeral). Containers share the host's
network, so a broker the test starts on 127.0.0.1 is reachable from inside.
"""

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from support import REPO

ROOTFS_CACHE = Path(os.environ.get("EDGE_AGENT_ROOTFS", "/var/tmp/edge-agent-test/bookworm"))
PACKAGES = "systemd,dbus,python3"
# The venv under test: containers bind it read-only and run the units' commands from it.
VENV = Path(sys.prefix)


def unavailable():
    """Why containers cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "booting a systemd container needs root"
    for tool in ("systemd-nspawn", "nsenter", "debootstrap"):
        if not shutil.which(tool):
            return f"{tool} is not installed (scripts/setup.sh installs it)"
    return None


def bookworm_rootfs():
    """The cached bookworm root, made on first use (about 45 s and 300 MB; needs the Debian mirror)."""
    if (ROOTFS_CACHE / "usr" / "lib" / "systemd" / "systemd").exists():
        return ROOTFS_CACHE
    partial = ROOTFS_CACHE.with_name(ROOTFS_CACHE.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(partial)],
                            capture_output=True, text=True, timeout=900)
    if result.returncode:
        pytest.skip(f"debootstrap failed (no Debian mirror?): {result.stderr.strip()[-300:]}")
    partial.rename(ROOTFS_CACHE)
    return ROOTFS_CACHE


def remove_stale_copies(root):
    """Remove the ephemeral copies of ``root`` that no systemd-nspawn holds any more.

    systemd-nspawn removes its copy when it exits, but one killed (or one whose removal failed
    half way) leaves ``.#machine.*`` beside the root: the size of a root each. A running one keeps
    the copy's lock file locked.
    """
    for copy in root.parent.glob(".#machine.*"):
        lock_path = copy.with_name(f".#{copy.name}.lck")
        try:
            with open(lock_path, "a") as lock:
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(copy, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
        except OSError:  # locked: a running container
            continue


class Container:
    """``with Container(binds=[...]) as box: box.run("systemctl", "is-active", "x")``."""

    def __init__(self, root=None, binds=(), read_only_binds=()):
        self.root = root or bookworm_rootfs()
        self.name = f"edge-test-{uuid.uuid4().hex[:8]}"
        self.binds = binds
        self.read_only_binds = read_only_binds
        self.process = None
        self.leader = None

    def start(self, timeout=60):
        remove_stale_copies(Path(self.root))
        command = ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--ephemeral",
                   f"--machine={self.name}", "--directory", str(self.root), "--console=pipe"]
        command += [f"--bind={path}" for path in self.binds]
        command += [f"--bind-ro={path}" for path in self.read_only_binds]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited: {self.process.stdout.read()[-2000:]}")
            self.leader = self.leader or self._find_leader()
            if self.leader:
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return self
            time.sleep(0.5)
        raise RuntimeError(f"container {self.name} did not finish booting in {timeout} s")

    def _find_leader(self):
        """The container's PID 1: the child of systemd-nspawn that runs systemd."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            pids = children.read_text().split()
        except OSError:
            return None
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            except OSError:
                continue
        return None

    def run(self, *command, check=True, timeout=120, input=None):
        result = subprocess.run(["nsenter", "-t", str(self.leader), "-a", *command], capture_output=True,
                                text=True, timeout=timeout, input=input)
        if check and result.returncode:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result

    def write(self, path, text, mode=0o644):
        self.run("sh", "-c", f"mkdir -p \"$(dirname '{path}')\" && cat > '{path}' && chmod {mode:o} '{path}'",
                 input=text)

    def stop(self):
        """End the container at once: an ephemeral copy has nothing to save, and a poweroff under
        emulation takes a minute or hangs (trixie's logind cannot start under qemu)."""
        if self.process is None or self.process.poll() is not None:
            return
        # Killing the container's init ends its whole PID namespace; killing systemd-nspawn alone
        # would leave that init running on, with all it started.
        if self.leader:
            try:
                os.kill(self.leader, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            # systemd-nspawn then removes the ephemeral copy and exits.
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def drop_in(command="edge-agent run --config /etc/edge-agent/edge-agent.yaml", watchdog_s=4):
    """Point a shipped unit at this checkout's venv, and let the service user reach its Python."""
    lines = ["[Service]", "ExecStart=", f"ExecStart={VENV}/bin/{command}", f"WatchdogSec={watchdog_s}", "RestartSec=1"]
    python_home = Path(sys.base_prefix)
    if python_home.is_relative_to("/root") or python_home.is_relative_to("/home"):
        # A Python installed under a home directory (pyenv) is hidden by ProtectHome=yes.
        lines += ["ProtectHome=tmpfs", f"BindReadOnlyPaths={python_home}"]
    if any(path.is_relative_to("/tmp") for path in (REPO, VENV)):
        # A checkout under /tmp (a CI clone) would vanish behind the service's private /tmp.
        lines += ["PrivateTmp=no"]
    return "\n".join(lines) + "\n"
