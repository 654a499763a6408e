"""The dashboard drawn off the ingest path: by `edge-collector run`'s worker process, or by
`edge-collector dashboard --watch` as a service of its own; and the stats pruned by the collector."""

import os
import re
import signal
import subprocess
import sys
import time

from test_collector_daemon import Collector, write_config

from edge_agent.collector.store import Store
from edge_agent.common.contract import StatsPayload, format_utc
from support import REPO, wait_until
from support.broker import Mosquitto, publish, publisher
from support.windows import window


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone in all but name.
    return open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] != "Z"


def worker_pid(collector, count=1):
    collector.wait_for_log("dashboard worker started", count=count)
    return int(re.findall(r"dashboard worker started \(pid (\d+)\)", collector.log_text())[count - 1])


def test_the_worker_draws_at_a_lower_priority_and_goes_when_the_collector_is_killed(tmp_path):
    out = tmp_path / "www"
    with Mosquitto() as broker:
        config = write_config(tmp_path / "collector.yaml", broker.port,
                              store_url=f"sqlite:///{tmp_path / 'c.sqlite3'}", output_dir=out)
        collector = Collector(config, tmp_path / "collector.log").start()
        try:
            pid = worker_pid(collector)
            assert pid != collector.process.pid
            assert open(f"/proc/{pid}/stat").read().split()[3] == str(collector.process.pid)
            ingest_nice = os.getpriority(os.PRIO_PROCESS, collector.process.pid)
            wait_until(lambda: os.getpriority(os.PRIO_PROCESS, pid) == ingest_nice + 10)
            client = publisher(broker.port)
            for minute in range(3):
                publish(client, "classroom/north/101/pi-101a/emotions", window("pi-101a", minute, happy=5).to_json())
            client.disconnect()
            wait_until(lambda: (out / "rooms" / "north" / "101.html").is_file(), timeout=30)
            collector.kill()
            wait_until(lambda: not alive(pid), timeout=10)
        finally:
            if collector.process.poll() is None:
                collector.kill()


def test_a_worker_that_dies_is_started_again(tmp_path):
    with Mosquitto() as broker:
        config = write_config(tmp_path / "collector.yaml", broker.port,
                              store_url=f"sqlite:///{tmp_path / 'c.sqlite3'}", output_dir=tmp_path / "www")
        collector = Collector(config, tmp_path / "collector.log").start()
        try:
            first = worker_pid(collector)
            os.kill(first, signal.SIGKILL)
            collector.wait_for_log(f"dashboard worker (pid {first}) exited with status -9; starting it again")
            second = worker_pid(collector, count=2)
            assert second != first and alive(second)
            assert collector.terminate() == 0
            assert not alive(second)
        finally:
            if collector.process.poll() is None:
                collector.kill()


def test_sigterm_to_every_process_of_the_collector_stops_it_at_once(tmp_path):
    # systemd's stop signals the whole unit; the worker, signalled while it waits for the next refresh,
    # once deadlocked there and held the unit past TimeoutStopSec.
    with Mosquitto() as broker:
        for run in range(2):
            out = tmp_path / f"www{run}"
            config = write_config(tmp_path / "collector.yaml", broker.port,
                                  store_url=f"sqlite:///{tmp_path / 'c.sqlite3'}", output_dir=out)
            collector = Collector(config, tmp_path / f"collector{run}.log").start()
            try:
                pid = worker_pid(collector)
                # The first build done: the worker now waits for the next refresh.
                wait_until((out / "index.html").is_file, timeout=30)
                time.sleep(0.5)
                assert collector.terminate(timeout=8, group=True) == 0
                assert not alive(pid)
            finally:
                if collector.process.poll() is None:
                    collector.kill()
    assert "did not stop" not in collector.log_text()


def test_without_the_worker_dashboard_watch_draws_and_stops_on_sigterm(tmp_path):
    out = tmp_path / "www"
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    with Mosquitto() as broker:
        config = write_config(tmp_path / "collector.yaml", broker.port, store_url=url, output_dir=out)
        config.write_text(config.read_text() + "  worker: false\n")
        collector = Collector(config, tmp_path / "collector.log").start()
        watcher = subprocess.Popen([sys.executable, "-m", "edge_agent.collector.cli", "dashboard", "--config",
                                    str(config), "--watch"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, cwd=REPO)
        try:
            collector.wait_for_log("(session new)")
            client = publisher(broker.port)
            publish(client, "classroom/north/101/pi-101a/emotions", window("pi-101a", 0, happy=5).to_json())
            wait_until(lambda: (out / "rooms" / "north" / "101" / "20261123T1000.html").is_file(), timeout=30)
            # The next refresh picks up what arrived since, without being asked.
            publish(client, "classroom/north/102/pi-102a/emotions",
                    window("pi-102a", 0, room="102", happy=5).to_json())
            client.disconnect()
            wait_until(lambda: (out / "rooms" / "north" / "102.html").is_file(), timeout=30)
            watcher.send_signal(signal.SIGTERM)
            assert watcher.wait(30) == 0, watcher.stdout.read()
            assert "dashboard worker" not in collector.log_text()
            assert collector.terminate() == 0
        finally:
            if watcher.poll() is None:
                watcher.kill()
            if collector.process.poll() is None:
                collector.kill()


def test_the_collector_summarises_and_deletes_old_stats(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    now = time.time()
    store = Store(url)
    for at in (now - 40 * 86400, now - 3 * 86400, now - 3 * 86400 + 60, now - 60):
        store.add_stats([("pi-1", StatsPayload(device="pi-1", t=format_utc(at), uptime_s=1.0, fps=1.0))],
                        received_at=at)
    store.close()
    with Mosquitto() as broker:
        config = write_config(tmp_path / "collector.yaml", broker.port, store_url=url, output_dir=tmp_path / "www")
        collector = Collector(config, tmp_path / "collector.log").start()
        try:
            collector.wait_for_log("stats: 2 rows summarised per hour, 1 older than 30 days deleted")
        finally:
            assert collector.terminate() == 0
    store = Store(url)
    assert [(row.summary, row.samples) for row in store.stats()] == [(True, 2), (False, 1)]
    store.close()
