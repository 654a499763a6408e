"""ansible/site.yml against real systemd hosts: a server container and camera containers.

The playbook runs three times: first with the cameras' package source broken (a partial
failure), then as IT would (it must converge), then again with the secrets moved into Ansible
Vault (it must change nothing). The checks look from outside: MQTT clients on the host, the
collector's SQLite store, systemctl.
"""

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
        # As the README advises: the secrets go into Ansible Vault, and the next run reads them there.
        vault_password = tmp / "vault-password"
        vault_password.write_text("correct horse battery staple\n")
        ansible_lab.vault_encrypt(vault_password, *(secrets / "mqtt").iterdir(), *(secrets / "pki").glob("*.key"))
        runs["second"] = ansible_lab.playbook(inventory, "--vault-password-file", str(vault_password))
        yield {"boxes": boxes, "port": port, "secrets": secrets, "passwords": passwords, "runs": runs,
               "setup_s": time.monotonic() - started}
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


def test_a_device_publishes_only_under_its_own_topic_and_the_collector_only_reads(lab):
    watcher, pi_a, collector = client(lab, "collector"), client(lab, "pi-a"), client(lab, "collector")
    try:
        for each in (watcher, pi_a, collector):
            answer = each.connect()
            assert answer is not None and not answer.is_failure, answer
        watcher.subscribe(f"{PREFIX}/#")
        time.sleep(0.5)
        denied = [f"{PREFIX}/north/102/pi-b/emotions", f"{PREFIX}/north/102/pi-a/emotions",
                  f"{PREFIX}/south/101/pi-a/emotions"]
        for topic in denied:
            pi_a.publish(topic)
        collector.publish(f"{PREFIX}/north/101/pi-a/probe")
        allowed = f"{PREFIX}/north/101/pi-a/probe-{time.time_ns()}"
        pi_a.publish(allowed)
        # Messages from one client arrive in order: once the allowed one is in, any other would be.
        assert watcher.wait_for(allowed), watcher.messages
        leaked = [topic for topic in watcher.messages if topic in denied or topic.endswith("/probe")]
        assert not leaked, leaked
    finally:
        for each in (watcher, pi_a, collector):
            each.close()


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


def test_the_broker_keeps_only_password_hashes(lab):
    hashes = lab["boxes"]["server"].run("cat", "/etc/mosquitto/passwd").stdout
    users = dict(line.split(":", 1) for line in hashes.splitlines() if line and not line.startswith("#"))
    assert set(users) == {"collector", "pi-a", "pi-b"}
    assert all(value.startswith("$7$") for value in users.values()), users
    assert not any(secret in hashes for secret in lab["passwords"].values())


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
