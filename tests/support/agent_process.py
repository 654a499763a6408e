"""``edge-agent run`` as a real process on the bundled clip, for tests of its bad days."""

import os
import signal
import subprocess
import sys
import time

from support import DATA, REPO

VIDEO = DATA / "test.mp4"


def agent_config(path, port, *, outbox, window_s=2, fps=4, memory_windows=None, require_sync=False, extra=""):
    """A looping-clip config with short windows; the clock is taken as it is unless ``require_sync``."""
    memory = "" if memory_windows is None else f"  memory_windows: {memory_windows}\n"
    path.write_text(
        f"device:\n  id: pi-test\n  site: north\n  room: '101'\n"
        f"camera:\n  source: {VIDEO}\n  loop: true\n  fps: {fps}\n  stall_s: 3\n  backoff_max_s: 2\n"
        f"window:\n  length_s: {window_s}\n  min_group: 1\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  keepalive_s: 5\n  reconnect_max_s: 1\n"
        f"  stats_interval_s: 5\n"
        f"outbox:\n  path: {outbox}\n{memory}"
        f"clock:\n  require_sync: {str(require_sync).lower()}\n" + extra)
    return path


class Agent:
    """One ``edge-agent run``; its combined output is kept in a file so a long run never blocks on a pipe."""

    def __init__(self, config, log_path, env=None):
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.agent.cli", "run", "--config", str(config)], cwd=REPO,
            stdout=self._log, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})

    @property
    def output(self):
        return self.log_path.read_text()

    def wait_for_output(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.process.poll() is None, f"the agent exited ({self.process.returncode}):\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} in the agent's output:\n{self.output}"
            time.sleep(0.1)

    def stop(self, timeout=30):
        """SIGTERM, then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()
