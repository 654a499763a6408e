"""ansible/site.yml against real systemd hosts: a server container and camera containers.

The playbook runs three times: first with the cameras' package source broken (a partial
failure), then as IT would (it must converge), then again with the secrets moved into Ansible
Vault (it must change nothing). The checks look from outside: MQTT clients on the host, the
collector's SQLite store, systemctl.
"""

import base64
import hashlib
import subprocess
import time

import pytest

from support import DATA, ansible_lab, container, free_port, port_open

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(ansible_lab.unavailable() is not None, reason=str(ansible_lab.unavailable()))]

PREFIX = "classroom"
COLLECTOR_CHECK = ["/opt/edge-collector/venv/bin/edge-collector", "check", "--config",
                   "/etc/edge-collector/collector.yaml"]
AGENT_CHECK = ["/opt/edge-agent/venv/bin/edge-agent", "check", "--config", "/etc/edge-agent/edge-agent.yaml"]


def inventory_data(boxes, port, secrets, wheels):
    """The school: one server; pi-a plays a recorded lesson, pi-b is a Pi whose camera is missing."""
    pip_args = " ".join(f"--find-links {path}" for path in wheels)
    reach = {"ansible_connection": "community.docker.nsenter", "ansible_python_interpreter": "/usr/bin/python3",
             "ansible_become": False}
    # The containers share the host's kernel clock, which no NTP daemon disciplines here.
    camera = {"edge_agent_window_length_s": 10, "edge_agent_window_min_group": 1, "edge_agent_camera_fps": 2,
              "edge_agent_clock_require_sync": False}
    return {"all": {
        "vars": {"mqtt_host": "127.0.0.1", "mqtt_port": port, "secrets_dir": str(secrets),
                 "mqtt_monitor_users": ["watcher"],
                 "edge_agent_pip_extra_args": f"--no-index {pip_args}",
                 "collector_pip_extra_args": f"--no-index {pip_args}"},
        "children": {
            "servers": {"vars": reach, "hosts": {"server": {
                "ansible_nsenter_pid": boxes["server"].leader, "collector_dashboard_refresh_s": 5}}},
            "cameras": {"vars": {**reach, **camera}, "hosts": {
                "pi-a": {"ansible_nsenter_pid": boxes["pi-a"].leader, "device_id": "pi-a", "site": "north",
                         "room": "101", "edge_agent_camera_video_src": str(DATA / "test.mp4"),
                         "edge_agent_camera_loop": True},
                # Debian has no python3-picamera2: the role installs only what apt has.
                "pi-b": {"ansible_nsenter_pid": boxes["pi-b"].leader, "device_id": "pi-b", "site": "north",
                         "room": "102", "edge_agent_camera_packages": ["python3-picamera2", "v4l-utils"]},
            }},
        },
    }}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if container.unavailable():
        pytest.skip(container.unavailable())
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("ansible")
    wheels = [ansible_lab.dependency_wheels(), ansible_lab.project_wheel(tmp / "project")]
    boxes = {}
    try:
        for name in ("server", "pi-a", "pi-b"):
            boxes[name] = container.Container(read_only_binds=[str(path) for path in wheels]).start()
        port = free_port()
        secrets = tmp / "secrets"
        inventory = ansible_lab.write_inventory(tmp / "hosts.yml", inventory_data(boxes, port, secrets, wheels))
        # The cameras cannot get the project: broker and collector are done, the cameras half.
        runs = {"partial": ansible_lab.playbook(inventory, "-e", "edge_agent_pip_extra_args='--no-index'"),
                "first": ansible_lab.playbook(inventory)}
        passwords = {path.name: path.read_text() for path in (secrets / "mqtt").iterdir()}
        passwd_first = boxes["server"].run("cat", "/etc/mosquitto/passwd").stdout
        # As the README advises: the secrets go into Ansible Vault, and the next run reads them there.
        vault_password = tmp / "vault-password"
        vault_password.write_text("correct horse battery staple\n")
        ansible_lab.vault_encrypt(vault_password, *(secrets / "mqtt").iterdir(), *(secrets / "pki").glob("*.key"))
        runs["second"] = ansible_lab.playbook(inventory, "--vault-password-file", str(vault_password))
        yield {"boxes": boxes, "port": port, "secrets": secrets, "passwords": passwords, "runs": runs,
               "passwd_first": passwd_first, "setup_s": time.monotonic() - started}
    finally:
        for box in boxes.values():
            box.stop()


def journal(box, unit):
    return box.run("journalctl", "-u", unit, "--no-pager", "-n", "30", check=False).stdout


def password(lab, user):
    return lab["passwords"][user]


def client(lab, user=None, **kwargs):
    return ansible_lab.Client(lab["port"], ca=lab["secrets"] / "pki" / "ca.crt", username=user,
                              password=password(lab, user) if user else None, **kwargs)


def test_a_rerun_after_a_partial_failure_converges(lab):
    partial, first = lab["runs"]["partial"], lab["runs"]["first"]
    assert partial.returncode != 0, partial.stdout[-3000:]
    assert ansible_lab.recap(partial.stdout)["pi-a"]["failed"] == 1, partial.stdout[-3000:]
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    assert set(ansible_lab.recap(first.stdout)) >= {"server", "pi-a", "pi-b"}


def test_the_second_run_with_the_secrets_in_vault_changes_nothing(lab):
    second = lab["runs"]["second"]
    assert second.returncode == 0, second.stdout[-5000:]
    changed = {host: counts["changed"] for host, counts in ansible_lab.recap(second.stdout).items()}
    assert set(changed.values()) == {0}, (changed, second.stdout[-5000:])
    assert (lab["secrets"] / "pki" / "ca.key").read_text().startswith("$ANSIBLE_VAULT")
    runs = ", ".join(f"{name} {run.seconds:.0f} s" for name, run in lab["runs"].items())
    print(f"\nwheels, three containers and three runs of site.yml ({runs}): {lab['setup_s']:.0f} s")


def test_the_broker_refuses_anonymous_and_plain_connections(lab):
    anonymous = client(lab)
    try:
        answer = anonymous.connect()
    finally:
        anonymous.close()
    assert answer is not None and answer.is_failure, answer
    plain = ansible_lab.Client(lab["port"], username="pi-a", password=password(lab, "pi-a"))
    try:
        answer = plain.connect(timeout=5)
    finally:
        plain.close()
    assert answer is None or isinstance(answer, Exception) or answer.is_failure, answer
    assert not port_open(1883), "a plain listener is open on 1883"


def connected(lab, user, **kwargs):
    each = client(lab, user, **kwargs)
    answer = each.connect()
    assert answer is not None and not isinstance(answer, Exception) and not answer.is_failure, (user, answer)
    return each


def window_json(device, room, start, seq):
    """A window as the contract has it, from a camera of north/ROOM."""
    from edge_agent.common.contract import EMOTIONS, EmotionsPayload, format_utc

    return EmotionsPayload.model_validate({
        "schema": 1, "device": device, "site": "north", "room": room, "window_start": format_utc(start),
        "window_s": 60, "seq": seq, "frames": 60, "faces": 10, "faces_per_frame_median": 10,
        "counts": dict.fromkeys(EMOTIONS, 0) | {"happy": 6, "neutral": 4}, "suppressed": False,
        "model": "test"}).to_json()


def test_a_device_publishes_only_its_own_three_topics(lab):
    """pi-b: no agent runs as pi-b (its camera is missing), so these logins disturb no one. pi-a's
    agent publishes on its own topics meanwhile: what pi-b sent is told apart by its payload."""
    watcher, pi_b = connected(lab, "watcher"), connected(lab, "pi-b")
    marked = f'{{"from": "pi-b", "at": {time.time_ns()}}}'.encode()
    try:
        watcher.subscribe(f"{PREFIX}/#")
        time.sleep(0.5)
        denied = [f"{PREFIX}/north/101/pi-a/emotions", f"{PREFIX}/north/102/pi-a/emotions",
                  f"{PREFIX}/south/102/pi-b/emotions", f"{PREFIX}/north/102/pi-b/probe",
                  f"{PREFIX}/north/102/pi-b/emotions/extra"]
        for topic in denied:
            pi_b.publish(topic, marked)
        allowed = f"{PREFIX}/north/102/pi-b/stats"
        pi_b.publish(allowed, marked)
        # Messages from one client arrive in order: once the allowed one is in, any other would be.
        assert watcher.wait_for(allowed), watcher.messages
        leaked = [topic for topic, payload, *_ in watcher.received if payload == marked and topic != allowed]
        assert not leaked, leaked
    finally:
        for each in (watcher, pi_b):
            each.close()


def test_a_camera_cannot_take_the_collectors_session_nor_its_queued_windows(lab):
    """The collector away; a camera queues three windows for it, then logs in with the collector's
    client ids; the collector's own login (resuming its session, acknowledging nothing) may not
    publish. Back, the collector stores all three."""
    server = lab["boxes"]["server"]
    starts = [(int(time.time()) // 60 - 180 + minute) * 60 for minute in range(3)]
    server.run("systemctl", "stop", "edge-collector", timeout=60)
    watcher = connected(lab, "watcher")
    try:
        watcher.subscribe(f"{PREFIX}/#")
        pi_b = connected(lab, "pi-b")
        for seq, start in enumerate(starts):
            pi_b.publish(f"{PREFIX}/north/102/pi-b/emotions", window_json("pi-b", "102", start, seq))
        pi_b.close()
        for client_id in ("edge-collector", "collector"):
            thief = connected(lab, "pi-b", client_id=client_id)
            time.sleep(1)
            thief.close()
        as_collector = connected(lab, "collector", resume=True, reconnect=False)
        as_collector.publish(f"{PREFIX}/north/101/collector/status", b'{"state": "online"}')
        as_collector.close()
        marker = f"{PREFIX}/north/102/pi-b/stats"
        pi_b = connected(lab, "pi-b")
        pi_b.publish(marker)
        pi_b.close()
        assert watcher.wait_for(marker), watcher.messages
        assert f"{PREFIX}/north/101/collector/status" not in watcher.messages
    finally:
        watcher.close()
        server.run("systemctl", "start", "edge-collector", timeout=60)
    deadline = time.monotonic() + 60
    while ansible_lab.stored_windows(server, "pi-b", timeout=5) < 3 and time.monotonic() < deadline:
        time.sleep(1)
    assert ansible_lab.stored_windows(server, "pi-b") == 3, journal(server, "edge-collector")
    log = server.run("journalctl", "-u", "mosquitto", "--no-pager", "-n", "200").stdout
    assert "as edge-collector" not in log and "as pi-b (p5, c1" in log, log[-3000:]


def test_the_broker_refuses_a_packet_of_a_megabyte_and_retained_messages_off_the_contract(lab):
    watcher = connected(lab, "watcher")
    try:
        watcher.subscribe(f"{PREFIX}/#")
        time.sleep(0.5)
        big = connected(lab, "pi-b", reconnect=False)
        big.client.publish(f"{PREFIX}/north/102/pi-b/emotions", b"x" * 1_000_000, qos=1)
        assert big.disconnected.wait(20), "the broker kept the client that sent 1 MB"
        big.client.loop_stop()
        pi_b = connected(lab, "pi-b")
        pi_b.publish(f"{PREFIX}/north/102/pi-b/kept", b"{}", retain=True)
        status = f"{PREFIX}/north/102/pi-b/status"
        pi_b.publish(status, b'{"state": "offline", "device": "pi-b"}', retain=True)
        assert watcher.wait_for(status), watcher.messages
        assert all(size < 1_000_000 for _, _, size, _ in watcher.received), [t for t, *_ in watcher.received]
        pi_b.close()
    finally:
        watcher.close()
    # Retained messages go to every new subscriber at once: the status is kept, the unlisted one is not.
    late = connected(lab, "watcher")
    try:
        late.subscribe(f"{PREFIX}/north/102/#")
        assert late.wait_for(status), late.messages
        time.sleep(1)
        assert f"{PREFIX}/north/102/pi-b/kept" not in late.messages, late.messages
    finally:
        late.close()


def test_windows_reach_the_collector_and_the_dashboard(lab):
    server, pi_a = lab["boxes"]["server"], lab["boxes"]["pi-a"]
    assert pi_a.run("systemctl", "is-active", "edge-agent", check=False).stdout.strip() == "active", \
        journal(pi_a, "edge-agent")
    assert server.run("systemctl", "is-active", "edge-collector", check=False).stdout.strip() == "active", \
        journal(server, "edge-collector")
    assert ansible_lab.stored_windows(server, "pi-a") >= 1, journal(server, "edge-collector") + journal(
        pi_a, "edge-agent")
    listing = server.run("find", "/var/lib/edge-collector/dashboard", "-type", "f").stdout.split()
    assert any(path.endswith(".html") for path in listing), listing
    check = server.run(*COLLECTOR_CHECK, check=False, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


def test_each_host_has_only_its_sides_packages(lab):
    """The server's venv has no OpenCV or LiteRT, a camera's none of the collector's store, pages or charts."""
    probe = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    modules = ("cv2", "ai_edge_litert", "sqlalchemy", "psycopg", "jinja2", "matplotlib")
    server = lab["boxes"]["server"].run("/opt/edge-collector/venv/bin/python", "-c", probe, *modules).stdout.split()
    camera = lab["boxes"]["pi-a"].run("/opt/edge-agent/venv/bin/python", "-c", probe, *modules).stdout.split()
    assert server == ["sqlalchemy", "psycopg", "jinja2", "matplotlib"]
    assert camera == ["cv2", "ai_edge_litert"]


def test_the_broker_keeps_only_password_hashes_each_with_its_own_kept_salt(lab):
    hashes = lab["boxes"]["server"].run("cat", "/etc/mosquitto/passwd").stdout
    users = dict(line.split(":", 1) for line in hashes.splitlines() if line and not line.startswith("#"))
    assert set(users) == {"collector", "pi-a", "pi-b", "watcher"}
    assert all(value.startswith("$7$101$") for value in users.values()), users
    assert not any(secret in hashes for secret in lab["passwords"].values())
    # Each salt is the random one kept in the secrets (so reruns rewrite nothing), none alike,
    # none made from the password; the hash is mosquitto's PBKDF2-SHA512 over it.
    salts = {user: bytes.fromhex((lab["secrets"] / "salts" / "mqtt" / user).read_text()) for user in users}
    assert len(set(salts.values())) == len(users)
    for user, value in users.items():
        _, _, iterations, salt, digest = value.split("$")
        assert base64.b64decode(salt) == salts[user]
        assert salts[user] != hashlib.sha512(user.encode() + b"\0" + password(lab, user).encode()).digest()[:12]
        assert base64.b64decode(digest) == hashlib.pbkdf2_hmac("sha512", password(lab, user).encode(), salts[user],
                                                                int(iterations), 64)
    assert hashes == lab["passwd_first"]


def test_the_agent_check_passes_with_the_provisioned_files_and_reads_the_service_outbox(lab):
    pi_a = lab["boxes"]["pi-a"]
    for user in ("root", "edge-agent"):
        result = pi_a.run("runuser", "-u", user, "--", *AGENT_CHECK, check=False, timeout=120)
        assert result.returncode == 0, f"as {user}: " + result.stdout + result.stderr
        outbox = next(line for line in result.stdout.splitlines() if line.startswith("outbox"))
        assert "/var/lib/edge-agent/outbox.sqlite3:" in outbox, f"as {user}: {outbox}"
    stat = pi_a.run("stat", "-c", "%a %U:%G", "/etc/edge-agent/mqtt-password").stdout.strip()
    assert stat == "640 root:edge-agent"


def test_a_camera_host_without_a_camera_is_warned_about_and_left_enabled(lab):
    pi_b = lab["boxes"]["pi-b"]
    assert "WARNING: pi-b has no camera at picamera2" in lab["runs"]["first"].stdout
    installed = pi_b.run("dpkg-query", "-W", "-f", "${Package} ${Status}\\n", "v4l-utils", "python3-picamera2",
                         check=False).stdout
    assert "v4l-utils install ok installed" in installed and "python3-picamera2 install" not in installed, installed
    assert pi_b.run("systemctl", "is-enabled", "edge-agent", check=False).stdout.strip() == "enabled"
    assert pi_b.run("systemctl", "is-active", "edge-agent", check=False).stdout.strip() != "active"
    result = pi_b.run(*AGENT_CHECK, check=False, timeout=120)
    assert result.returncode != 0
    assert any(line.startswith("camera") and "FAIL" in line for line in result.stdout.splitlines()), result.stdout


def test_missing_inventory_variables_stop_the_run_before_anything_changes(tmp_path):
    secrets = tmp_path / "secrets"
    inventory = ansible_lab.write_inventory(tmp_path / "hosts.yml", {"all": {
        "vars": {"mqtt_host": "broker.example", "secrets_dir": str(secrets)},
        "children": {"servers": {"hosts": {"server": {}}},
                     "cameras": {"hosts": {"pi-x": {"device_id": "pi-x", "site": "north"},
                                           "pi-y": {"device_id": "pi y", "site": "north", "room": "2"}}}}}})
    result = ansible_lab.playbook(inventory)
    assert result.returncode != 0
    assert "host pi-x: variable room is not set" in result.stdout, result.stdout
    assert "host pi-y: variable device_id is not 1-64 letters, digits, _ . -" in result.stdout, result.stdout
    assert not secrets.exists()
    assert "Make the secrets" not in result.stdout


def test_lint_and_syntax():
    lint = subprocess.run([str(ansible_lab.BIN / "ansible-lint"), "--profile", "production", "--nocolor"],
                          cwd=ansible_lab.ANSIBLE_DIR, capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    syntax = ansible_lab.playbook(ansible_lab.ANSIBLE_DIR / "inventory" / "example" / "hosts.yml", "--syntax-check")
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
