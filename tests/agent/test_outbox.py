"""The outbox against real SQLite files: order, seq across restarts, expiry, power cut, damage."""

import logging
import os
import pwd
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edge_agent.agent.outbox import Outbox, OutboxError, Pending
from edge_agent.agent.tally import WindowTally
from edge_agent.common.contract import format_utc, parse_payload, topic
from edge_agent.common.errors import EdgeAgentError
from support import REPO

SITE, ROOM, DEVICE, MODEL = "north", "101", "pi-101a", "mini-xception-int8:3f2a9c1e"
TOPIC = topic("classroom", SITE, ROOM, DEVICE, "emotions")
T0 = 1_795_000_000 // 60 * 60  # a minute boundary in 2026


def window(start, faces=5):
    """A real closed window from the tally: ``faces`` happy faces in one frame."""
    tally = WindowTally(length_s=60, min_group=3)
    tally.add(start + 1, ["happy"] * faces)
    return tally.flush()


def builder(start, faces=5):
    closed = window(start, faces)
    return lambda seq: closed.payload(device=DEVICE, site=SITE, room=ROOM, seq=seq, model=MODEL)


def fill(outbox, count, first=T0):
    return [outbox.append(TOPIC, builder(first + 60 * i)) for i in range(count)]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state" / "outbox.sqlite3"


def moved_aside(path):
    return sorted(p for p in path.parent.glob(path.name + ".corrupt-*") if not p.name.endswith(("-wal", "-shm")))


# -- queue -----------------------------------------------------------------------------------


def test_append_pending_remove_keep_order_and_contents(path):
    with Outbox(path) as outbox:
        stored = fill(outbox, 3)
        assert [p.seq for p in stored] == [0, 1, 2]
        assert outbox.depth == 3 and outbox.next_seq == 3

        waiting = outbox.pending()
        assert waiting == stored
        for item, i in zip(waiting, range(3), strict=True):
            assert isinstance(item, Pending) and item.topic == TOPIC
            payload = parse_payload("emotions", item.payload, (SITE, ROOM, DEVICE))
            assert payload.seq == item.seq == i
            assert payload.start_epoch == item.window_start == T0 + 60 * i
            assert payload.faces == 5 and payload.counts.happy == 5

        outbox.remove(stored[0].id)
        assert [p.seq for p in outbox.pending()] == [1, 2]
        outbox.remove(stored[0].id)  # already gone: no error
        outbox.remove(10_000)
        assert outbox.depth == 2


def test_pending_skips_in_flight_ids_and_honours_limit(path):
    with Outbox(path) as outbox:
        stored = fill(outbox, 6)
        assert [p.seq for p in outbox.pending(limit=2)] == [0, 1]
        in_flight = {stored[0].id, stored[1].id, stored[3].id}
        assert [p.seq for p in outbox.pending(limit=2, exclude=in_flight)] == [2, 4]
        assert [p.seq for p in outbox.pending(exclude=in_flight)] == [2, 4, 5]
        assert outbox.pending(exclude=[p.id for p in stored]) == []


def test_a_failing_build_stores_nothing_and_uses_no_seq(path):
    def broken(seq):
        raise RuntimeError("no payload")

    with Outbox(path) as outbox:
        fill(outbox, 1)
        with pytest.raises(RuntimeError):
            outbox.append(TOPIC, broken)
        assert outbox.depth == 1 and outbox.next_seq == 1
        assert outbox.append(TOPIC, builder(T0 + 60)).seq == 1


def test_seq_rises_across_restarts_even_when_the_outbox_was_emptied(path):
    with Outbox(path) as outbox:
        fill(outbox, 2)
    with Outbox(path) as outbox:
        assert outbox.next_seq == 2
        assert [p.seq for p in outbox.pending()] == [0, 1]  # the backlog survives, oldest first
        for item in outbox.pending():
            outbox.remove(item.id)
        assert outbox.depth == 0
    with Outbox(path) as outbox:
        assert outbox.append(TOPIC, builder(T0 + 120)).seq == 2


def test_close_is_idempotent_and_a_closed_outbox_says_so(path):
    outbox = Outbox(path)
    outbox.close()
    outbox.close()
    with pytest.raises(OutboxError, match="closed"):
        outbox.append(TOPIC, builder(T0))


def test_one_thread_appends_while_another_removes(path):
    with Outbox(path) as outbox:
        done = threading.Event()
        errors = []

        def acknowledge():
            try:
                while not done.is_set() or outbox.depth:
                    for item in outbox.pending(limit=10):
                        outbox.remove(item.id)
            except Exception as exc:  # surfaced below; a thread cannot fail the test itself
                errors.append(exc)

        worker = threading.Thread(target=acknowledge)
        worker.start()
        fill(outbox, 100)
        done.set()
        worker.join(timeout=30)
        assert not worker.is_alive() and errors == []
        assert outbox.depth == 0 and outbox.next_seq == 100


def test_file_uses_wal_and_is_private(path):
    Outbox(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    with Outbox(path) as outbox:
        assert outbox._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


# -- bounded by age --------------------------------------------------------------------------


def test_old_windows_are_dropped_counted_and_logged(path, caplog):
    now = [T0 + 10 * 3600]
    with Outbox(path, max_age_s=3600, clock=lambda: now[0]) as outbox:
        fill(outbox, 3, first=T0)                               # ten hours old
        young = outbox.append(TOPIC, builder(now[0] - 600))     # ten minutes old
        with caplog.at_level(logging.WARNING, logger="edge_agent.agent.outbox"):
            assert outbox.drop_expired() == 3
        assert outbox.pending() == [young]
        assert outbox.dropped_total == 3
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        text = warnings[0].getMessage()
        assert "dropped 3 " in text and format_utc(T0) in text and format_utc(T0 + 120) in text

        caplog.clear()
        assert outbox.drop_expired() == 0
        assert not [r for r in caplog.records if r.levelno == logging.WARNING]

        now[0] += 3600
        assert outbox.drop_expired() == 1
        assert outbox.depth == 0 and outbox.dropped_total == 4

    with Outbox(path, max_age_s=3600, clock=lambda: now[0]) as outbox:
        assert outbox.dropped_total == 4
        assert outbox.append(TOPIC, builder(now[0])).seq == 4  # dropping never frees a seq


# -- power cut -------------------------------------------------------------------------------

CHILD = """
import sys
sys.path.insert(0, {repo!r})
from edge_agent.agent.outbox import Outbox
from edge_agent.agent.tally import WindowTally
outbox = Outbox({path!r})
i = 0
while True:
    tally = WindowTally(length_s=60, min_group=3)
    tally.add({t0} + 60 * i + 1, ["happy"] * 5)
    closed = tally.flush()
    stored = outbox.append({topic!r}, lambda seq: closed.payload(
        device={device!r}, site={site!r}, room={room!r}, seq=seq, model={model!r}))
    print(stored.seq, flush=True)
    i += 1
"""


def test_a_process_killed_while_writing_leaves_a_healthy_outbox(path):
    reported_target = 25
    script = CHILD.format(repo=str(REPO), path=str(path), t0=T0, topic=TOPIC, device=DEVICE,
                          site=SITE, room=ROOM, model=MODEL)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reported = []
    try:
        deadline = time.monotonic() + 60
        while len(reported) < reported_target and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            reported.append(int(line))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        stderr = child.stderr.read()
        child.stderr.close()
    assert len(reported) == reported_target, stderr
    assert child.returncode == -signal.SIGKILL
    # Killed without closing: the write-ahead log is still there and must be recovered.
    assert path.with_name(path.name + "-wal").exists()

    with Outbox(path) as outbox:
        assert moved_aside(path) == []
        seqs = [p.seq for p in outbox.pending(limit=10_000)]
        assert seqs[:reported_target] == reported
        assert seqs == list(range(len(seqs)))  # no gap, no duplicate
        assert outbox.next_seq == len(seqs)
        for item in outbox.pending(limit=10_000):
            assert parse_payload("emotions", item.payload).seq == item.seq
            outbox.remove(item.id)
        assert outbox.depth == 0
        assert outbox.append(TOPIC, builder(T0 - 60)).seq == len(seqs)


# -- damaged files ---------------------------------------------------------------------------


def assert_moved_aside(path, caplog, original):
    moved = moved_aside(path)
    assert len(moved) == 1
    assert moved[0].read_bytes() == original
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(path) in errors[0] and str(moved[0]) in errors[0]
    return moved[0]


def assert_fresh(path):
    with Outbox(path) as outbox:
        assert outbox.depth == 0 and outbox.next_seq == 0
        assert outbox.append(TOPIC, builder(T0)).seq == 0
    with Outbox(path) as outbox:
        assert outbox.depth == 1


def test_a_file_of_random_bytes_is_moved_aside(path, caplog):
    path.parent.mkdir()
    original = random.Random(1).randbytes(8192)
    path.write_bytes(original)
    wal = random.Random(2).randbytes(1000)
    path.with_name(path.name + "-wal").write_bytes(wal)
    with caplog.at_level(logging.ERROR, logger="edge_agent.agent.outbox"):
        Outbox(path).close()
    moved = assert_moved_aside(path, caplog, original)
    # Its log went with it, and was not replayed onto the new file.
    assert moved.with_name(moved.name + "-wal").read_bytes() == wal
    assert_fresh(path)


def test_a_truncated_database_is_moved_aside(path, caplog):
    with Outbox(path) as outbox:
        fill(outbox, 300)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with caplog.at_level(logging.ERROR, logger="edge_agent.agent.outbox"):
        Outbox(path).close()
    assert_moved_aside(path, caplog, whole[: len(whole) // 2])
    assert_fresh(path)


def test_another_programs_database_is_moved_aside(path, caplog):
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    db.close()
    original = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="edge_agent.agent.outbox"):
        Outbox(path).close()
    assert_moved_aside(path, caplog, original)
    assert_fresh(path)


def test_an_outbox_from_a_newer_agent_is_left_alone(path):
    Outbox(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(OutboxError, match="schema version 99"):
        Outbox(path)
    assert moved_aside(path) == []


# -- places that cannot be written -----------------------------------------------------------


def test_a_parent_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    target = tmp_path / "afile" / "outbox.sqlite3"
    with pytest.raises(OutboxError) as caught:
        Outbox(target)
    message = str(caught.value)
    assert str(target) in message and "cannot be written" in message and "not a directory" in message
    assert isinstance(caught.value, EdgeAgentError) and caught.value.exit_status == 2


def test_a_path_that_is_a_directory_is_a_clear_error(tmp_path):
    target = tmp_path / "outbox.sqlite3"
    target.mkdir()
    with pytest.raises(OutboxError, match=f"outbox {target} cannot be written: Is a directory"):
        Outbox(target)


# Root writes through permission bits, so as root these open the outbox in a child process
# running as an unprivileged user: the checks hold whoever runs the suite (CI runs it as root).
UNPRIVILEGED = "nobody"


@pytest.fixture
def private_dir():
    """A directory the unprivileged user owns, in a place it can reach (pytest's tmp is root's alone)."""
    directory = Path(tempfile.mkdtemp(prefix="outbox-"))
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(UNPRIVILEGED)
        except KeyError:
            pytest.skip(f"no user {UNPRIVILEGED!r} to drop root's privileges to")
        shutil.chown(directory, UNPRIVILEGED)
    try:
        yield directory
    finally:
        for below in directory.rglob("*"):
            if below.is_dir():
                below.chmod(0o700)
        shutil.rmtree(directory)


def give_away(*paths):
    """Hand ``paths`` to the unprivileged user, as the service's own state would be."""
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, UNPRIVILEGED)


# Privileges are dropped after the imports: the interpreter may live where that user cannot read.
OPEN_AS = """\
import os, sys
from edge_agent.agent.outbox import Outbox, OutboxError
if len(sys.argv) > 2:
    os.setgroups([])
    os.setgid(int(sys.argv[3]))
    os.setuid(int(sys.argv[2]))
try:
    Outbox(sys.argv[1]).close()
except OutboxError as exc:
    print(exc)
"""


def outbox_error(target):
    """The OutboxError text of opening an outbox at ``target`` as a user permission bits bind."""
    user = []
    if os.geteuid() == 0:
        entry = pwd.getpwnam(UNPRIVILEGED)
        user = [str(entry.pw_uid), str(entry.pw_gid)]
    result = subprocess.run([sys.executable, "-c", OPEN_AS, str(target), *user], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_read_only_directory_is_a_clear_error(private_dir):
    parent = private_dir / "state"
    parent.mkdir()
    give_away(parent)
    parent.chmod(0o500)
    target = parent / "outbox.sqlite3"
    assert outbox_error(target) == f"outbox {target} cannot be written: Permission denied"
    assert not target.exists()


def test_a_corrupt_file_in_a_read_only_directory_is_an_error_and_left_untouched(private_dir):
    path = private_dir / "state" / "outbox.sqlite3"
    path.parent.mkdir()
    path.write_bytes(b"x" * 4096)
    give_away(path.parent, path)
    path.parent.chmod(0o500)
    message = outbox_error(path)
    assert message.startswith(f"outbox {path} cannot be written: ") and "not writable" in message
    assert path.read_bytes() == b"x" * 4096
    assert moved_aside(path) == []


def test_last_window_end_is_remembered_across_restarts(tmp_path):
    from edge_agent.agent.tally import WindowTally
    from edge_agent.common.contract import parse_utc

    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as outbox:
        assert outbox.last_window_end is None
        tally = WindowTally(60, min_group=1)
        tally.add(parse_utc("2026-11-23T10:15:00Z") + 5, ["happy"])
        window = tally.flush()
        outbox.append("t", lambda seq: window.payload(device="pi-1", site="s", room="r", seq=seq, model="m:1"))
    with Outbox(path) as outbox:
        assert outbox.last_window_end == parse_utc("2026-11-23T10:16:00Z")
