"""A full or read-only disk under the outbox: real tmpfs and ext4 mounts, real SQLite, a real agent and broker."""

import json
import time

import pytest

from edge_agent.agent.outbox import Outbox, OutboxError
from edge_agent.agent.tally import WindowTally
from edge_agent.common.contract import parse_payload, topic
from support import free_port, run_cli
from support.agent_process import Agent, agent_config
from support.broker import Mosquitto, Subscriber
from support.mounts import FailingExt4, Tmpfs

TOPIC = topic("classroom", "north", "101", "pi-test", "emotions")
PREFIX = "classroom/north/101/pi-test/"
T0 = 1_795_000_000 // 60 * 60


def build(start):
    tally = WindowTally(length_s=60, min_group=1)
    tally.add(start + 1, ["happy"])
    closed = tally.flush()
    return lambda seq: closed.payload(device="pi-test", site="north", room="101", seq=seq, model="m:1")


def test_a_full_disk_refuses_appends_keeps_the_file_and_recovers(tmp_path):
    with Tmpfs("256k") as disk:
        path = disk.where / "outbox.sqlite3"
        outbox = Outbox(path)
        first, second = (outbox.append(TOPIC, build(T0 + 60 * i)) for i in range(2))
        disk.fill()
        with pytest.raises(OutboxError) as refused:
            outbox.append(TOPIC, build(T0 + 120))
        assert str(refused.value) == (f"outbox {path} cannot be written: database or disk is full "
                                      "(the disk holding it is full (0 KiB free): free space on it)")
        assert refused.value.reason == "database or disk is full"
        assert outbox.next_seq == 2  # the refused window took no seq
        # The broker acknowledged the first window, but its row cannot be deleted: it is not sent again.
        outbox.remove(first.id)
        assert [p.seq for p in outbox.pending()] == [1] and outbox.depth == 1
        outbox.close()
        # An outbox on a disk that filled up since still opens, and what it holds still goes out.
        outbox = Outbox(path)
        assert [p.seq for p in outbox.pending()] == [0, 1]
        outbox.remove(first.id)
        (disk.where / "ballast").unlink()
        outbox.remove(second.id)
        assert outbox.append(TOPIC, build(T0 + 120)).seq == 2
        assert [p.seq for p in outbox.pending()] == [2] and outbox.depth == 1
        outbox.close()


def windows(subscriber):
    return [parse_payload("emotions", p, ("north", "101", "pi-test")) for p in subscriber.payloads("/emotions")]


def latest(subscriber, kind):
    found = subscriber.payloads(f"/{kind}")
    return json.loads(found[-1]) if found else {}


def test_full_tmpfs_holds_the_newest_windows_in_memory_counts_the_rest_and_recovers(tmp_path):
    memory = 4
    with Tmpfs("512k") as disk, Mosquitto() as broker, Subscriber(broker.port, [PREFIX + "#"]) as sub:
        outbox = disk.where / "outbox.sqlite3"
        config = agent_config(tmp_path / "agent.yaml", broker.port, outbox=outbox, memory_windows=memory)
        agent = Agent(config, tmp_path / "agent.log")
        try:
            sub.wait_for(lambda m: len(windows(sub)) >= 2, timeout=40)
            disk.fill()
            agent.wait_for_output("cannot be written: database or disk is full", timeout=20)
            # Twice the memory bound of windows close while the disk is full.
            sub.wait_for(lambda m: latest(sub, "stats").get("windows_held") == memory, timeout=30)
            time.sleep(2 * memory * 2)
            assert agent.process.poll() is None
            stats = latest(sub, "stats")
            assert stats["outbox_failing"] is True and stats["windows_held"] == memory
            assert stats["dropped_windows"] >= 1
            assert latest(sub, "status")["outbox"] == "cannot be written: database or disk is full"
            sent_before = len(windows(sub))
            (disk.where / "ballast").unlink()
            agent.wait_for_output("can be written again", timeout=20)
            sub.wait_for(lambda m: len(windows(sub)) >= sent_before + memory, timeout=20)
            sub.wait_for(lambda m: "outbox" not in latest(sub, "status"), timeout=10)
        finally:
            assert agent.stop() == 0, agent.output
        time.sleep(1)
        received = windows(sub)
        with Outbox(outbox) as box:
            dropped, computed, waiting = box.dropped_total, box.next_seq, box.depth
    assert waiting == 0
    seqs = [w.seq for w in received]
    assert sorted(set(seqs)) == list(range(computed)), "every stored window went out, once"
    starts = sorted({w.start_epoch for w in received})
    assert len(starts) == len(set(seqs)), "one window per window_start"
    missing = sum((b - a) // 2 - 1 for a, b in zip(starts, starts[1:], strict=False))
    assert dropped >= 1 and missing == dropped, "the only windows not sent are the ones counted as dropped"
    log = agent.output
    assert log.count("dropped: 4 windows are already held in memory") == dropped


def test_an_sd_card_gone_read_only_keeps_the_agent_running(tmp_path):
    memory = 3
    with FailingExt4() as card, Mosquitto() as broker, Subscriber(broker.port, [PREFIX + "#"]) as sub:
        outbox = card.where / "outbox.sqlite3"
        config = agent_config(tmp_path / "agent.yaml", broker.port, outbox=outbox, memory_windows=memory)
        agent = Agent(config, tmp_path / "agent.log")
        try:
            sub.wait_for(lambda m: len(windows(sub)) >= 1, timeout=40)
            card.fail()
            sub.wait_for(lambda m: latest(sub, "stats").get("windows_held") == memory
                         and latest(sub, "stats").get("dropped_windows", 0) >= 2, timeout=40)
            assert agent.process.poll() is None
            assert latest(sub, "stats")["outbox_failing"] is True
            assert latest(sub, "status")["outbox"].startswith("cannot be written: ")
        finally:
            status = agent.stop()
        assert status == 0, agent.output
        assert "cannot be written" in agent.output and "turns read-only" in agent.output
        assert f"{memory} window(s) held in memory could not be written" in agent.output


def test_an_outbox_left_by_a_killed_agent_starts_on_a_full_disk_and_a_new_one_exits_2(tmp_path):
    with Tmpfs("512k") as disk:
        outbox = disk.where / "outbox.sqlite3"
        config = agent_config(tmp_path / "a.yaml", free_port(), outbox=outbox)
        agent = Agent(config, tmp_path / "a.log")
        agent.wait_for_output("stored as seq 0")
        agent.kill()  # a power cut: the -wal and -shm stay, with room to write into
        disk.fill()
        agent = Agent(config, tmp_path / "b.log")
        try:
            agent.wait_for_output("has only 0 KiB free")
            agent.wait_for_output("closed windows wait in memory")
        finally:
            assert agent.stop() == 0, agent.output
        # Nothing at all can be written for a new outbox: exit 2 with the reason.
        fresh = disk.where / "fresh" / "outbox.sqlite3"
        result = run_cli("run", "--config", agent_config(tmp_path / "c.yaml", free_port(), outbox=fresh))
        assert result.returncode == 2
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"edge-agent: error: outbox {fresh} cannot be written: ")
        assert last.endswith("(the disk holding it is full (0 KiB free): free space on it)")
