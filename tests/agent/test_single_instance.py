"""One agent per outbox: a second ``run`` on the same state exits 2 naming the first; ``check`` only reads."""

import os

import pytest

from edge_agent.agent.lock import AlreadyRunning, OutboxLock
from edge_agent.agent.outbox import Outbox
from support import free_port, run_cli
from support.agent_process import Agent, agent_config
from support.mounts import Tmpfs


def test_a_second_lock_on_one_outbox_is_refused_and_names_the_holder(tmp_path):
    outbox = tmp_path / "state" / "outbox.sqlite3"
    with OutboxLock(outbox):
        assert (tmp_path / "state" / "outbox.sqlite3.lock").read_text() == f"{os.getpid()}\n"
        # flock(2) is per open file: a second opening in this very process is refused too.
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}: .*python"):
            OutboxLock(outbox).acquire()
        OutboxLock(tmp_path / "other.sqlite3").acquire().release()
    # Released: the next one takes it.
    OutboxLock(outbox).acquire().release()


def test_a_second_run_exits_2_naming_the_first_and_check_still_works(tmp_path):
    outbox = tmp_path / "state" / "outbox.sqlite3"
    config = agent_config(tmp_path / "agent.yaml", free_port(), outbox=outbox)
    first = Agent(config, tmp_path / "first.log")
    try:
        first.wait_for_output("stored as seq 0")
        second = run_cli("run", "--config", config)
        assert second.returncode == 2, second.stderr
        (line,) = second.stderr.splitlines()
        assert line.startswith(f"edge-agent: error: outbox {outbox} is locked by a running agent "
                               f"(pid {first.process.pid}: ")
        assert "edge_agent.agent.cli run --config" in line and "systemctl stop edge-agent" in line
        assert "running:" not in second.stderr  # it stopped before opening the camera
        checked = run_cli("check", "--config", config)
        verdict = next(v for v in checked.stdout.splitlines() if v.startswith("outbox"))
        assert verdict.split()[1] == "ok" and "window(s) waiting" in verdict, checked.stdout
        assert first.process.poll() is None
    finally:
        first.kill()
    # The lock died with the process: a fresh run takes over the same outbox.
    again = Agent(config, tmp_path / "again.log")
    try:
        again.wait_for_output("stored as seq")
    finally:
        assert again.stop() == 0


def test_check_reads_an_outbox_it_cannot_write(tmp_path):
    with Tmpfs("1m") as disk:
        outbox = disk.where / "outbox.sqlite3"
        with Outbox(outbox) as box:
            assert box.next_seq == 0
        assert os.system(f"mount -o remount,ro {disk.where}") == 0
        config = agent_config(tmp_path / "agent.yaml", free_port(), outbox=outbox)
        checked = run_cli("check", "--config", config)
        verdict = next(v for v in checked.stdout.splitlines() if v.startswith("outbox"))
        assert verdict.split()[1] == "ok" and "0 window(s) waiting, next seq 0" in verdict, checked.stdout
