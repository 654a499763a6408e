"""A real Prometheus (Debian's package) for tests: a child process on a free loopback port, its data in a temp dir.

    with Prometheus(targets=["127.0.0.1:9464"]) as prometheus:   # scraped every second
        prometheus.query('edge_device_fps{device="pi-101a"}')    # [(labels, value)] of an instant query
        prometheus.wait_for('edge_device_fps{device="pi-101a"}')
"""

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from support import free_port, port_open

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


class Prometheus:
    def __init__(self, targets, *, job="edge-collector", scrape_interval="1s"):
        if not Path(PROMETHEUS).is_file():
            pytest.skip(f"{PROMETHEUS} is not installed (scripts/setup.sh installs Debian's prometheus)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}]}))
        self.log_path = self.dir / "prometheus.log"
        self.proc = None

    def start(self, timeout=60):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([PROMETHEUS, f"--config.file={self.config}",
                                          f"--storage.tsdb.path={self.dir / 'data'}",
                                          f"--web.listen-address=127.0.0.1:{self.port}"],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with status {self.proc.returncode}:\n{self.log_text()}")
            if port_open(self.port) and self._get("/-/ready", check=False) == 200:
                return self
            time.sleep(0.2)
        raise AssertionError(f"prometheus was not ready on port {self.port} within {timeout} s:\n{self.log_text()}")

    def _get(self, path, check=True):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as answer:
                return json.load(answer) if check else answer.status
        except OSError:
            if check:
                raise
            return None

    def query(self, expression):
        """``[(labels, value)]`` of an instant query."""
        answer = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expression}))
        assert answer["status"] == "success", answer
        return [(item["metric"], float(item["value"][1])) for item in answer["data"]["result"]]

    def wait_for(self, expression, predicate=bool, timeout=60):
        """The query's result once ``predicate(result)`` holds; AssertionError with the last result otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expression)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                targets = self._get("/api/v1/targets")
                raise AssertionError(f"{expression}: {result} after {timeout} s; targets: {targets}")
            time.sleep(0.5)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
