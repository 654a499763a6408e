"""64-bit Raspberry Pi OS's Debian base (arm64) run here under qemu-user emulation.

A Pi's OS is Debian arm64: trixie (Python 3.13) on current images, bookworm (Python 3.11) on
many installed ones. binfmt_misc hands arm64 binaries to qemu-aarch64-static, so a root made by
``debootstrap --arch=arm64`` runs with chroot and systemd-nspawn, its own systemd included.
Emulation proves installs and behaviour, never speed.

Invariants:
- A root is made once per suite and package list and cached under ``CACHE``
  (``<suite>-<key>``); it is built under a temporary name and renamed when complete, so a
  half-made root is never used, and an ``flock`` per suite makes parallel runs wait for one
  build instead of racing. Roots for an older package list are removed when a new one is made.
- Tests never change a cached root: commands run in it read-only (``run``), with only the
  bound directories writable, and booted containers get a throw-away copy (support.container).
- The wheels a Pi's pip resolves for the agent are downloaded once per suite and per version of
  what declares them (setup.py, requirements/), by pip inside the arm64 root, so they are the
  ones pip on a Pi picks; installs then run offline from that wheelhouse.
- On a cold cache (a fresh CI machine) a run that includes the arm64 tests fills it from its
  start, in a background process at the lowest CPU priority (``start_warming``, from
  conftest.py), so the builds overlap the rest of the suite; the locks make a test that gets
  there first wait for that build rather than start its own.
"""

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from support import REPO, source_copy

CACHE = Path(os.environ.get("EDGE_AGENT_ARM64_CACHE", "/var/tmp/edge-agent-test/arm64"))
MIRROR = os.environ.get("EDGE_AGENT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITES = ("bookworm", "trixie")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
# A booted container needs systemd and dbus; the rest is what the README's Pi section has the
# owner install with apt (read from it, so the two cannot drift apart).
BOOT_PACKAGES = ("systemd", "dbus")
# Where the README tells a Pi owner to put the agent; the venv is bound there from the host.
VENV = "/opt/edge-agent/venv"
# Each of a Pi 4's and a Pi 5's cores, as qemu models them: int8 kernels are picked by the CPU's
# features (a Cortex-A76 has dot-product instructions, a Cortex-A72 has not).
PI_CPUS = {"bookworm": "cortex-a72", "trixie": "cortex-a76"}
# Tested: 10.0 runs the agent; 7.2 (Debian 12's own) crashes in LiteRT's int8 kernels.
QEMU_MAJOR = 10
# 32-bit Raspberry Pi OS's base, for the test that the Ansible role refuses it: only Ansible's python3.
ARMHF_ROOT = {"suite": "bookworm", "arch": "armhf", "packages": ("python3",)}


def readme_apt_packages():
    """The Debian packages the README's Pi section installs with apt, less those only a Pi's archive has."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^sudo apt install -y (.+?)\s*(?:#.*)?$", text, re.M)
    assert match, "README.md has no 'sudo apt install -y ...' line in its Pi section"
    return tuple(name for name in match.group(1).split() if name != "python3-picamera2")


def _register(emulator):
    """Register ``emulator`` with binfmt_misc as its package describes it (systemd-binfmt's format,
    which is the kernel's), replacing what is there: with the F flag the kernel keeps the binary
    it opened at registration, so an upgraded qemu runs only once registered again."""
    entry = BINFMT / emulator
    if entry.exists():
        entry.write_text("-1")
    for conf in (Path("/usr/lib/binfmt.d") / f"{emulator}.conf", Path("/usr/share/qemu/binfmt.d") / f"{emulator}.conf"):
        if conf.is_file():
            line = next(line for line in conf.read_text().splitlines() if line.startswith(":"))
            (BINFMT / "register").write_text(line)
            return
    if shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", emulator], capture_output=True, timeout=30)


def unavailable(emulator="qemu-aarch64"):
    """Why arm64 roots (armhf ones with ``emulator="qemu-arm"``) cannot run here, or None when they can.

    Mounts binfmt_misc and registers the emulator where the machine booted without them.
    """
    if os.geteuid() != 0:
        return "running foreign roots needs root (debootstrap, systemd-nspawn)"
    for tool in ("debootstrap", "systemd-nspawn", f"{emulator}-static"):
        if not shutil.which(tool):
            return f"{tool} is not installed (scripts/setup.sh installs it: qemu-user-static, binfmt-support)"
    version = subprocess.run([f"{emulator}-static", "--version"], capture_output=True, text=True, timeout=30).stdout
    major = int(re.search(r"version (\d+)", version).group(1))
    if major < QEMU_MAJOR:
        return (f"qemu {major} emulates arm64 too poorly (7.2 crashes LiteRT's int8 kernels and shows the host's "
                f"/proc/cpuinfo); install qemu-user-static {QEMU_MAJOR} or later (scripts/setup.sh takes it from "
                "bookworm-backports)")
    if not (BINFMT / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True, timeout=30)
    entry = BINFMT / emulator
    if not entry.exists():
        _register(emulator)
    if not entry.exists():
        return f"{emulator} is not registered with binfmt_misc ({entry} is missing)"
    lines = entry.read_text().splitlines()
    if lines[0] != "enabled":
        return f"{entry} is disabled"
    # F: the kernel opens qemu when the entry is registered, so it runs inside roots that lack it.
    if not any(line.startswith("flags:") and "F" in line.split(":", 1)[1] for line in lines):
        return f"{entry} lacks the F flag, so qemu cannot run inside a root (reinstall qemu-user-static)"
    return None


def emulated_cpu_problem(root_dir, cpu):
    """None when ``root_dir`` runs under the installed qemu as ``cpu``, else why not.

    qemu 8 and later show the emulated CPU in /proc/cpuinfo, which LiteRT reads to pick its kernels;
    an old qemu still registered (held open by the F flag) shows the host's, and is registered anew.
    """
    for attempt in range(2):
        shown = run(root_dir, "cat", "/proc/cpuinfo", cpu=cpu, timeout=120, check=False).stdout
        if "CPU implementer" in shown:
            return None
        if attempt == 0:
            _register("qemu-aarch64")
    return f"the qemu registered for arm64 shows the host's /proc/cpuinfo: {shown[:200]!r}"


def _digest(*parts):
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


@contextmanager
def _locked(name):
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _replace_stale(prefix, keep):
    for stale in CACHE.glob(f"{prefix}-*"):
        if stale.name != keep and not stale.name.endswith(".lock"):
            shutil.rmtree(stale, ignore_errors=True)


def _root_path(suite, arch, packages):
    packages = sorted({*BOOT_PACKAGES, *readme_apt_packages()} if packages is None else packages)
    return CACHE / f"{arch}-{suite}-{_digest(suite, arch, MIRROR, *packages)}", packages


def _wheels_path(suite):
    declared = [REPO / "setup.py", *sorted((REPO / "requirements").glob("*.txt"))]
    return CACHE / f"wheels-{suite}-{_digest(suite, *readme_apt_packages(), *(p.read_text() for p in declared))}"


def root(suite, arch="arm64", packages=None):
    """The cached root of ``suite`` for ``arch``; by default an arm64 one with the boot and README
    packages (about 2.5 min to make on an idle machine)."""
    target, packages = _root_path(suite, arch, packages)
    name = f"{arch}-{suite}"
    with _locked(name):
        if (target / "usr" / "bin" / "python3").exists():
            return target
        for crashed in CACHE.glob(f"partial-{name}-*"):
            shutil.rmtree(crashed, ignore_errors=True)
        partial = CACHE / f"partial-{name}-{uuid.uuid4().hex[:6]}"
        result = subprocess.run(["debootstrap", f"--arch={arch}", "--variant=minbase",
                                 f"--include={','.join(packages)}", suite, str(partial), MIRROR],
                                capture_output=True, text=True, timeout=3600)
        if result.returncode:
            log = partial / "debootstrap" / "debootstrap.log"
            detail = log.read_text(errors="replace")[-1500:] if log.exists() else result.stderr[-1500:]
            shutil.rmtree(partial, ignore_errors=True)
            pytest.skip(f"debootstrap of {arch} {suite} failed (no Debian mirror?): {detail}")
        # A minbase root has no hostname: systemd would take the host's, which tests may not touch.
        (partial / "etc" / "hostname").write_text(f"pi-{suite}\n")
        partial.rename(target)
        _replace_stale(name, target.name)
        return target


def run(root_dir, *command, binds=(), read_only_binds=(), env=None, cpu=None, timeout=1800, check=True):
    """Run ``command`` in ``root_dir``, whose changes vanish with it; ``binds`` (``src:dst``) are what it may change."""
    argv = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--volatile=overlay", "--console=pipe",
            "--directory", str(root_dir)]
    argv += [f"--bind={bind}" for bind in binds] + [f"--bind-ro={bind}" for bind in read_only_binds]
    environment = {**(env or {}), **({"QEMU_CPU": cpu} if cpu else {})}
    argv += [f"--setenv={key}={value}" for key, value in environment.items()]
    result = subprocess.run([*argv, "--", *command], capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(command)} in {root_dir.name} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def agent_wheel(directory):
    """This checkout as the edge-agent wheel (pure Python: the same file for every architecture)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = source_copy(Path(tmp) / "edge-agent")
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                                 "--wheel-dir", str(directory), str(source)],
                                capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise AssertionError(f"cannot build the edge-agent wheel: {result.stderr[-2000:]}")
    (wheel,) = Path(directory).glob("edge_agent-*.whl")
    return wheel


def wheelhouse(root_dir, suite, wheel):
    """The wheels pip on arm64 ``suite`` resolves for ``wheel``'s dependencies, downloaded once."""
    wheels = _wheels_path(suite)
    with _locked(f"wheels-{suite}"):
        if wheels.is_dir():
            return wheels
        for crashed in CACHE.glob(f"partial-wheels-{suite}-*"):
            shutil.rmtree(crashed, ignore_errors=True)
        partial = CACHE / f"partial-wheels-{suite}-{uuid.uuid4().hex[:6]}"
        partial.mkdir()
        try:
            # A throw-away install as the README's resolves them: for this suite's Python on arm64, and
            # with the system's packages seen (systemd-python comes from apt, never built here).
            script = ("python3 -m venv --system-site-packages /tmp/pip && "
                      f"/tmp/pip/bin/pip install --quiet /project/{wheel.name} && "
                      "/tmp/pip/bin/pip freeze --local --exclude edge-agent > /tmp/resolved.txt && "
                      "/tmp/pip/bin/pip download --quiet --no-deps --dest /wheels -r /tmp/resolved.txt")
            # pip inside trusts what this machine trusts (a proxy's CA, say) and uses its index.
            trust = Path(os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
                         or "/etc/ssl/certs/ca-certificates.crt")
            env = {"PIP_CERT": "/etc/host-ca.crt"} if trust.is_file() else {}
            if os.environ.get("PIP_INDEX_URL"):
                env["PIP_INDEX_URL"] = os.environ["PIP_INDEX_URL"]
            result = run(root_dir, "sh", "-c", script, binds=[f"{partial}:/wheels"], env=env,
                         read_only_binds=[f"{wheel.parent}:/project",
                                          *([f"{trust}:/etc/host-ca.crt"] if trust.is_file() else [])],
                         check=False)
            if result.returncode:
                pytest.skip(f"pip on arm64 {suite} cannot download the agent's dependencies (no package index?): "
                            f"{result.stderr[-1500:]}")
            partial.rename(wheels)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        _replace_stale(f"wheels-{suite}", wheels.name)
        return wheels


def cold():
    """Whether any root or wheelhouse the arm64 tests use is still to be made."""
    roots = [_root_path(suite, "arm64", None)[0] for suite in SUITES]
    if unavailable("qemu-arm") is None:
        roots.append(_root_path(ARMHF_ROOT["suite"], ARMHF_ROOT["arch"], ARMHF_ROOT["packages"])[0])
    return (not all((path / "usr" / "bin" / "python3").exists() for path in roots)
            or not all(_wheels_path(suite).is_dir() for suite in SUITES))


def warm():
    """Make every root and wheelhouse the arm64 tests use (``python -m support.arm64``)."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = agent_wheel(Path(tmp))
        for suite in SUITES:
            wheelhouse(root(suite), suite, wheel)
    if unavailable("qemu-arm") is None:
        root(**ARMHF_ROOT)


def start_warming():
    """Fill a cold cache in the background at the lowest CPU priority; the process, or None."""
    if unavailable() is not None or not cold():
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "warm.log", "w") as log:
        return subprocess.Popen([sys.executable, "-m", "support.arm64"], cwd=REPO / "tests", stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=lambda: os.nice(19))


def stop_warming(process):
    """End the warming and everything it started (debootstrap, systemd-nspawn); what it left half
    made is never used, and the next build removes it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


if __name__ == "__main__":
    # unavailable() also registers the emulator, which a fresh machine has not done yet.
    sys.exit(unavailable() or warm())
