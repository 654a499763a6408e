"""The clock on a Pi without one: no window before NTP sync, and steps forward and back handled.

The wall and monotonic clocks and the sync check are injected (the seams for the hardware's time);
the tally, the outbox (real SQLite) and, in the last tests, the agent itself are the real ones.
"""

import socket
import stat
import threading
import time

import pytest

from edge_agent.agent import clock as clock_module
from edge_agent.agent.clock import AgentClock, kernel_synchronized, system_clock_synchronized
from edge_agent.agent.config import parse_config
from edge_agent.agent.daemon import Agent
from edge_agent.agent.outbox import Outbox
from edge_agent.agent.tally import WindowTally
from edge_agent.common.contract import topic
from support import free_port
from support.agent_process import Agent as AgentProcess
from support.agent_process import agent_config

L = 5  # window length, seconds
NOW = 1_796_000_000 // L * L  # the real time the Pi should have: late 2026
TOPIC = topic("classroom", "north", "101", "pi-test", "emotions")
DAY = 86400


# -- the sync check ---------------------------------------------------------------------------


def test_the_kernel_answers_here_with_a_yes_or_no():
    assert kernel_synchronized() in (True, False)
    assert system_clock_synchronized() == kernel_synchronized()


def fake_timedatectl(directory, script):
    path = directory / "timedatectl"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(directory)


@pytest.mark.parametrize("script, expected", [
    ('[ "$*" = "show --property=NTPSynchronized --value" ] && echo yes\n', True),
    ("echo no\n", False),
    ("echo 'Failed to connect to bus: Host is down' >&2; exit 1\n", None),
])
def test_where_adjtimex_is_refused_timedated_is_asked(tmp_path, monkeypatch, script, expected):
    # The unit's system-call filter answers adjtimex with EPERM; timedated reads the same flag outside it.
    monkeypatch.setattr(clock_module, "kernel_synchronized", lambda: None)
    monkeypatch.setenv("PATH", fake_timedatectl(tmp_path, script))
    assert system_clock_synchronized() is expected


def test_with_no_way_to_tell_the_clock_counts_as_unsynchronised(tmp_path, monkeypatch):
    monkeypatch.setattr(clock_module, "kernel_synchronized", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert system_clock_synchronized() is None
    agent_clock = AgentClock(synchronized=system_clock_synchronized, monotonic=lambda: 0.0)
    assert agent_clock.stamp() is None
    assert "neither adjtimex nor timedatectl can tell; set clock.require_sync: false" in agent_clock.waiting_text()


# -- a Pi's boot, then steps, simulated a frame a second ------------------------------------------


class Pi:
    """A Pi's two clocks and its NTP daemon, with the agent's clock, tally and outbox on top."""

    def __init__(self, outbox_path, boot_wall):
        self.wall, self.mono = float(boot_wall), 1000.0
        self.synced = False
        self.outbox = Outbox(outbox_path, clock=lambda: self.wall)
        self.closed = []  # (monotonic time it closed, window)
        self.start_agent()

    def start_agent(self):
        floor = self.outbox.last_window_end
        self.tally = WindowTally(L, min_group=1, floor=floor)
        self.clock = AgentClock(length_s=L, floor=floor, synchronized=lambda: self.synced,
                                wall=lambda: self.wall, monotonic=lambda: self.mono, check_every_s=1.0)

    def run(self, seconds):
        for _ in range(int(seconds)):
            self.wall += 1
            self.mono += 1
            stamp = self.clock.stamp()
            if stamp is not None:
                self.store(self.tally.add(stamp, ["happy"]))
                self.store(self.tally.close_due(stamp))

    def stop(self):
        """SIGTERM: the open window is saved."""
        self.store(self.tally.flush())

    def store(self, window):
        if window is not None:
            self.closed.append((self.mono, window))
            self.outbox.append(TOPIC, lambda seq: window.payload(
                device="pi-test", site="north", room="101", seq=seq, model="m:1"))

    def closed_since(self, mono):
        return [window for at, window in self.closed if at > mono]

    def longest_silence(self, since):
        times = [since] + [at for at, _ in self.closed if at > since]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


@pytest.mark.parametrize("boot_wall", [30, NOW - 5 * DAY], ids=["boot at 1970", "boot at a stale time"])
def test_windows_wait_for_sync_then_ride_out_steps_forward_and_back(tmp_path, boot_wall):
    pi = Pi(tmp_path / "outbox.sqlite3", boot_wall)
    pi.run(120)  # the clock is wrong and says so: no window
    assert pi.closed == [] and pi.clock.waiting
    pi.wall = NOW  # NTP steps the clock, then reports it synchronised
    pi.run(3)
    pi.synced = True
    synced_at = pi.mono
    pi.run(60)
    first = pi.closed_since(0)
    assert first and all(window.start >= NOW for window in first), "nothing stamped by the unsynchronised clock"
    assert pi.clock.stamps.ahead_s == 0

    # +3 days: the open window closes at the jump and the next opens at the new time; no empty windows.
    before = pi.closed[-1][1].start
    jumped_at = pi.mono
    pi.wall += 3 * DAY
    pi.run(60)
    after = pi.closed_since(jumped_at)
    assert after[0].start == before + L, "the window open at the jump closes with what it had"
    assert after[1].start >= before + 3 * DAY and all(w.frames for w in after)
    assert pi.longest_silence(jumped_at) <= L + 1

    # -2 hours: windows keep coming a window apart, stamped on from the last one, 2 h ahead of the clock.
    last = pi.closed[-1][1].start
    stepped_at = pi.mono
    pi.wall -= 7200
    pi.run(60)
    back = pi.closed_since(stepped_at)
    assert len(back) >= 60 // L - 1 and pi.longest_silence(stepped_at) <= L + 1
    assert back[0].start == last + L and pi.clock.stamps.ahead_s == 7200

    # A restart while still behind: the agent begins where its outbox ends, not 2 h of silence later.
    pi.stop()
    last = pi.closed[-1][1].start
    restarted_at = pi.mono
    pi.start_agent()
    pi.run(60)
    assert pi.longest_silence(restarted_at) <= L + 1
    assert pi.closed_since(restarted_at)[0].start == last + L

    starts = [window.start for _, window in pi.closed]
    assert len(starts) == len(set(starts)), "never two windows under one window_start"
    assert starts == sorted(starts)
    assert all(window.start >= NOW for _, window in pi.closed) and pi.closed[0][0] > synced_at
    stored = [p.window_start for p in pi.outbox.pending(limit=10_000)]
    assert stored == starts and pi.outbox.next_seq == len(starts)
    pi.outbox.close()


def test_a_step_forward_takes_the_lead_off_first(tmp_path):
    pi = Pi(tmp_path / "outbox.sqlite3", NOW)
    pi.synced = True
    pi.run(30)
    pi.wall -= 600
    pi.run(30)
    assert pi.clock.stamps.ahead_s == 600
    pi.wall += 900  # NTP puts the clock right: the stamps were 600 s ahead, now the clock is 300 s past them
    pi.run(30)
    assert pi.clock.stamps.ahead_s == 0
    starts = [window.start for _, window in pi.closed]
    assert len(starts) == len(set(starts)) and starts == sorted(starts)
    assert abs(pi.closed[-1][1].start - pi.wall) <= 2 * L
    pi.outbox.close()


# -- the agent itself ---------------------------------------------------------------------------


class Notes:
    """What the agent tells systemd, as a Notifier would send it."""

    def __init__(self):
        self.statuses, self.pings = [], 0

    def ready(self, status=None):
        self.status(status)

    def status(self, text):
        if text:
            self.statuses.append(text)

    def watchdog(self):
        self.pings += 1

    def stopping(self, status=None):
        self.status(status)


def test_the_agent_waits_for_sync_with_camera_and_watchdog_alive(tmp_path, caplog):
    caplog.set_level("INFO")
    config = parse_config(agent_config(tmp_path / "agent.yaml", free_port(), outbox=tmp_path / "o.sqlite3",
                                       require_sync=True).read_text())
    synced = threading.Event()
    agent_clock = AgentClock(length_s=config.window.length_s, synchronized=synced.is_set, check_every_s=0.2)
    notes, stop, reload = Notes(), threading.Event(), threading.Event()
    agent = Agent(config, notes, stop, reload, clock=agent_clock)
    runner = threading.Thread(target=agent.serve)
    runner.start()
    try:
        time.sleep(6)
        assert agent.counters.frames >= 10 and notes.pings >= 10, "camera and watchdog alive"
        assert agent.outbox.next_seq == 0 and agent.tally.open_start is None, "no window before sync"
        assert notes.statuses[-1].startswith("waiting for clock sync (0 min so far), camera running")
        assert "waiting for clock sync (0 min so far): no window is stamped until" in caplog.text
        synced.set()
        deadline = time.monotonic() + 15
        while agent.outbox.next_seq < 2:
            assert time.monotonic() < deadline, "windows start once the clock is synchronised"
            time.sleep(0.2)
        assert "clock sync" not in notes.statuses[-1]
    finally:
        stop.set()
        runner.join(30)
        agent.close()


def test_a_clock_that_never_synchronises_is_reported_and_the_watchdog_fed(tmp_path):
    if system_clock_synchronized():
        pytest.skip("this machine's clock is NTP-synchronised: an agent here does not wait")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.2)
    outbox = tmp_path / "o.sqlite3"
    config = agent_config(tmp_path / "agent.yaml", free_port(), outbox=outbox, require_sync=True)
    agent = AgentProcess(config, tmp_path / "agent.log",
                         env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000",
                              "WATCHDOG_PID": ""})
    messages = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                messages.append(notify.recv(4096).decode())
            except TimeoutError:
                pass
    finally:
        assert agent.stop() == 0, agent.output
        notify.close()
    lines = [line for message in messages for line in message.splitlines()]
    assert any(line.startswith("STATUS=waiting for clock sync") for line in lines), lines
    assert sum(line == "WATCHDOG=1" for line in lines) >= 8
    assert "no window is stamped until the system clock is synchronised" in agent.output
    with Outbox(outbox) as box:
        assert box.next_seq == 0
