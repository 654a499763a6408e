"""The dashboard behind nginx as ansible/site.yml sets it up: TLS only, a login, each instructor their rooms.

One server container (broker, collector, nginx); the cameras are in the inventory, for their
rooms, but the runs are limited to the server. Lessons of rooms north/101 and north/102 are
written into the collector's store on the server, and the checks look from outside as a
browser would: Python's urllib and ssl with the school CA the secrets role made.
"""

import base64
import http.client
import re
import ssl
import time

import pytest

from support import ansible_lab, browser, container, free_port

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(ansible_lab.unavailable() is not None, reason=str(ansible_lab.unavailable()))]

USERS = {"alice": ("north/101",), "bob": ("north/1*",), "it-admin": ("all",)}
PASSWORDS = {"alice": "alice correct horse", "bob": "bob battery staple", "it-admin": "it: long & random!"}
DASHBOARD = "/var/lib/edge-collector/dashboard"
# Two lessons in each room, two weeks apart, from their cameras, written as the collector stores them.
SEED = """
import time
from edge_agent.collector.store import Store
from edge_agent.common.contract import EMOTIONS, EmotionsPayload, StatusPayload, format_utc
store = Store("sqlite:////var/lib/edge-collector/collector.sqlite3")
now = (int(time.time()) // 60 - 120) * 60
for device, room in (("pi-a", "101"), ("pi-b", "102")):
    windows = []
    for start in (now - 14 * 86400, now):
        for m in range(20):
            windows.append(EmotionsPayload.model_validate({
                "schema": 1, "device": device, "site": "north", "room": room,
                "window_start": format_utc(start + 60 * m), "window_s": 60, "seq": start // 60 + m,
                "frames": 60, "faces": 10, "faces_per_frame_median": 10,
                "counts": dict.fromkeys(EMOTIONS, 0) | {"happy": 6, "neutral": 2, "sad": 2},
                "suppressed": False, "model": "test"}))
    store.add_windows(windows)
    store.set_status(StatusPayload.model_validate({"device": device, "state": "online", "camera": "running",
                                                   "version": "0.1.0"}), site="north", room=room,
                     received_at=time.time())
store.close()
"""


def inventory_data(box, ports, secrets, wheels, users):
    pip_args = " ".join(f"--find-links {path}" for path in wheels)
    reach = {"ansible_connection": "community.docker.nsenter", "ansible_python_interpreter": "/usr/bin/python3",
             "ansible_become": False}
    return {"all": {
        "vars": {"mqtt_host": "127.0.0.1", "mqtt_port": ports["mqtt"], "secrets_dir": str(secrets),
                 "edge_agent_pip_extra_args": f"--no-index {pip_args}",
                 "collector_pip_extra_args": f"--no-index {pip_args}"},
        "children": {
            "servers": {"vars": reach, "hosts": {"server": {
                "ansible_nsenter_pid": box.leader, "collector_dashboard_refresh_s": 5,
                "collector_web_server": True, "collector_web_port": ports["http"],
                "collector_web_tls_port": ports["https"],
                "dashboard_users": [{"name": name, "password": PASSWORDS[name], "rooms": list(rooms)}
                                    for name, rooms in users.items()]}}},
            # Never reached (the runs are limited to the server): their rooms are what patterns match.
            "cameras": {"hosts": {"pi-a": {"device_id": "pi-a", "site": "north", "room": "101"},
                                  "pi-b": {"device_id": "pi-b", "site": "north", "room": "102"}}},
        },
    }}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if container.unavailable():
        pytest.skip(container.unavailable())
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("dashboard")
    wheels = [ansible_lab.dependency_wheels(), ansible_lab.project_wheel(tmp / "project")]
    box = container.Container(read_only_binds=[str(path) for path in wheels]).start()
    try:
        ports = {"mqtt": free_port(), "http": free_port(), "https": free_port()}
        secrets = tmp / "secrets"

        def run(users, name):
            inventory = ansible_lab.write_inventory(tmp / f"{name}.yml",
                                                    inventory_data(box, ports, secrets, wheels, users))
            return ansible_lab.playbook(inventory, "--limit", "server")

        runs = {"first": run(USERS, "first")}
        assert runs["first"].returncode == 0, runs["first"].stdout[-5000:] + runs["first"].stderr[-2000:]
        seed = box.run("runuser", "-u", "edge-collector", "--", "/opt/edge-collector/venv/bin/python", "-c", SEED,
                       check=False, timeout=120)
        assert seed.returncode == 0, seed.stdout + seed.stderr
        runs["again"] = run(USERS, "again")
        lab = {"box": box, "ports": ports, "ca": secrets / "pki" / "ca.crt", "runs": runs, "run": run}
        wait_for_pages(lab)
        lab["setup_s"] = time.monotonic() - started
        yield lab
    finally:
        box.stop()


def wait_for_pages(lab, timeout=90):
    deadline = time.monotonic() + timeout
    wanted = [f"{DASHBOARD}/rooms/north/101.html", f"{DASHBOARD}/rooms/north/102.html",
              f"{DASHBOARD}/groups/alice/index.html", f"{DASHBOARD}/devices/pi-a.html"]
    while time.monotonic() < deadline:
        if lab["box"].run("test", "-f", wanted[0], "-a", "-f", wanted[1], "-a", "-f", wanted[2], "-a", "-f",
                          wanted[3], check=False).returncode == 0:
            return
        time.sleep(2)
    listing = lab["box"].run("find", DASHBOARD, check=False).stdout
    raise AssertionError(f"the collector wrote no pages for both rooms: {listing[-2000:]}")


def tls_context(lab, **versions):
    context = ssl.create_default_context(cafile=str(lab["ca"]))
    for key, value in versions.items():
        setattr(context, key, value)
    return context


def get(lab, path, user=None, password=None):
    """``(status, headers, body)`` of a GET over HTTPS; the path is sent as given, never normalised."""
    connection = http.client.HTTPSConnection("127.0.0.1", lab["ports"]["https"], context=tls_context(lab),
                                             timeout=20)
    headers = {}
    if user:
        secret = PASSWORDS[user] if password is None else password
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
    try:
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.headers, answer.read()
    finally:
        connection.close()


def some_image(lab, room):
    found = lab["box"].run("find", f"{DASHBOARD}/rooms/north/{room}", "-name", "*.svg").stdout.split()
    assert found, room
    return found[0].removeprefix(DASHBOARD)


def test_the_rerun_changes_nothing(lab):
    again = lab["runs"]["again"]
    assert again.returncode == 0, again.stdout[-5000:]
    changed = {host: counts["changed"] for host, counts in ansible_lab.recap(again.stdout).items()}
    assert changed == {"server": 0}, (changed, again.stdout[-5000:])
    runs = ", ".join(f"{name} {run.seconds:.0f} s" for name, run in lab["runs"].items())
    print(f"\nwheels, a container, two runs of site.yml ({runs}) and the first pages: {lab['setup_s']:.0f} s")


def test_anonymous_and_wrong_passwords_get_401_and_never_content(lab):
    for path in ("/", "/index.html", "/rooms/north/101.html", some_image(lab, "101"), "/groups/alice/index.html",
                 "/devices/pi-a.html", "/no/such/page"):
        status, headers, body = get(lab, path)
        assert status == 401, (path, status)
        assert b"Room north" not in body and headers["WWW-Authenticate"].startswith("Basic"), path
        assert get(lab, path, "alice", "wrong")[0] == 401, path
        assert get(lab, path, "nobody", "x")[0] == 401, path


def test_plain_http_only_redirects_to_https(lab):
    for path in ("/", "/rooms/north/101.html"):
        connection = http.client.HTTPConnection("127.0.0.1", lab["ports"]["http"], timeout=20)
        try:
            connection.request("GET", path, headers={"Authorization": "Basic " + base64.b64encode(
                f"it-admin:{PASSWORDS['it-admin']}".encode()).decode()})
            answer = connection.getresponse()
            body = answer.read()
        finally:
            connection.close()
        assert answer.status == 301, (path, answer.status)
        assert answer.headers["Location"] == f"https://127.0.0.1:{lab['ports']['https']}{path}"
        assert b"Room north" not in body and b"Classroom interest" not in body


def test_an_instructor_sees_their_rooms_pages_and_images_and_nothing_else(lab):
    status, headers, _ = get(lab, "/", "alice")
    assert status == 302 and headers["Location"].endswith("/groups/alice/index.html"), (status, headers)
    status, headers, _ = get(lab, "/index.html", "alice")
    assert status == 302 and headers["Location"].endswith("/groups/alice/index.html"), (status, headers)
    status, _, index = get(lab, "/groups/alice/index.html", "alice")
    assert status == 200
    assert b"north/101" in index and b"north/102" not in index and b"pi-a.html" not in index
    rooms = set(re.findall(rb'href="\.\./\.\./(rooms/[^"]+)"', index))
    assert rooms and all(link.startswith(b"rooms/north/101") for link in rooms), rooms
    for link in rooms:
        assert get(lab, "/" + link.decode(), "alice")[0] == 200, link
    room = get(lab, "/rooms/north/101.html", "alice")
    assert room[0] == 200 and b"Room north/101" in room[2]
    assert get(lab, some_image(lab, "101"), "alice")[0] == 200
    denied = ["/rooms/north/102.html", some_image(lab, "102"), "/devices/pi-a.html", "/groups/bob/index.html",
              "/rooms/north/101", "/rooms/north/101/../102.html", "/rooms/north/101/%2e%2e/102.html",
              "/rooms/north/101%2F..%2F102.html", "/rooms/north/101/..%2F102.html", "/rooms/", "/groups/",
              "/.manifest.json", "/rooms/north/102/.manifest.json", "/etc/passwd", "/../../etc/passwd"]
    for path in denied:
        status, _, body = get(lab, path, "alice")
        assert status in (400, 403, 404), (path, status)
        assert b"Room north" not in body and b"Device pi" not in body, path


def test_a_pattern_grants_every_room_it_matches(lab):
    status, _, index = get(lab, "/groups/bob/index.html", "bob")
    assert status == 200 and b"north/101" in index and b"north/102" in index
    assert get(lab, "/rooms/north/102.html", "bob")[0] == 200
    assert get(lab, "/devices/pi-b.html", "bob")[0] == 404


def test_it_sees_everything_including_the_fleet(lab):
    status, headers, _ = get(lab, "/", "it-admin")
    assert status == 302 and headers["Location"].endswith("/index.html") and "groups" not in headers["Location"]
    status, _, index = get(lab, "/index.html", "it-admin")
    assert status == 200 and b'id="devices"' in index and b"north/101" in index and b"north/102" in index
    for path in ("/rooms/north/101.html", "/rooms/north/102.html", some_image(lab, "102"), "/devices/pi-a.html",
                 "/groups/alice/index.html"):
        assert get(lab, path, "it-admin")[0] == 200, path


def test_every_answer_carries_the_security_headers(lab):
    for answer in (get(lab, "/rooms/north/101.html", "alice"), get(lab, "/rooms/north/101.html"),
                   get(lab, "/rooms/north/102.html", "alice")):
        headers = answer[1]
        assert headers["Strict-Transport-Security"].startswith("max-age="), answer[0]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "img-src 'self'" in policy
        assert "script-src" not in policy


def test_the_pages_show_their_style_and_charts_in_chromium_under_the_security_policy(lab):
    """The policy allows no script: the pages' inline style and their SVG charts must still load."""
    with browser.chromium() as chrome:
        # The school CA is not in this browser's store; the login goes as a header on every request.
        chrome.execute_cdp_cmd("Security.setIgnoreCertificateErrors", {"ignore": True})
        chrome.execute_cdp_cmd("Network.enable", {})
        secret = base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
        chrome.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {secret}"}})
        base = f"https://127.0.0.1:{lab['ports']['https']}"
        chrome.get(base + "/")
        assert chrome.current_url == base + "/groups/alice/index.html"
        assert "north/101" in chrome.page_source and "north/102" not in chrome.page_source
        chrome.get(base + "/rooms/north/101.html")
        assert "Room north/101" in chrome.page_source
        # The inline <style> applied (style-src 'unsafe-inline'): a browser default would be serif.
        assert "system-ui" in chrome.execute_script("return getComputedStyle(document.body).fontFamily")
        shown = browser.images(chrome)
        assert shown and all(done and width > 0 for _, done, width in shown), shown
        chrome.get(base + "/rooms/north/102.html")
        assert "Room north/102" not in chrome.page_source


def test_no_tls_below_1_2(lab):
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = tls_context(lab, minimum_version=version, maximum_version=version)
        with context.wrap_socket(__import__("socket").create_connection(("127.0.0.1", lab["ports"]["https"])),
                                 server_hostname="127.0.0.1") as sock:
            assert sock.version() == version.name.replace("v1_", "v1.")
    old = tls_context(lab, minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        with old.wrap_socket(__import__("socket").create_connection(("127.0.0.1", lab["ports"]["https"])),
                             server_hostname="127.0.0.1"):
            pass


def test_the_server_keeps_only_password_hashes(lab):
    text = lab["box"].run("cat", "/etc/nginx/edge-dashboard/htpasswd").stdout
    lines = dict(line.split(":", 1) for line in text.splitlines() if line)
    assert set(lines) == set(USERS) and all(value.startswith("$6$") for value in lines.values()), lines
    assert not any(secret in text for secret in PASSWORDS.values())
    stat = lab["box"].run("stat", "-c", "%a %U:%G", "/etc/nginx/edge-dashboard/htpasswd").stdout.strip()
    assert stat == "640 root:www-data"


def test_bad_dashboard_users_stop_the_run_before_anything_changes(tmp_path):
    secrets = tmp_path / "secrets"
    users = [{"name": "alice", "password": "x", "rooms": []},
             {"name": "bob", "rooms": ["north/101"]},
             {"name": "carol", "password": "x", "rooms": ["south/*"]},
             {"name": "../dave", "password": "x", "rooms": ["all"]}]
    inventory = ansible_lab.write_inventory(tmp_path / "hosts.yml", {"all": {
        "vars": {"mqtt_host": "broker.example", "secrets_dir": str(secrets)},
        "children": {"servers": {"hosts": {"server": {"collector_web_server": True, "dashboard_users": users}}},
                     "cameras": {"hosts": {"pi-a": {"device_id": "pi-a", "site": "north", "room": "101"}}}}}})
    result = ansible_lab.playbook(inventory)
    assert result.returncode != 0
    for line in ("dashboard_users user alice: key rooms is empty",
                 "dashboard_users user bob: key password is missing",
                 "dashboard_users user carol: key rooms: south/* matches no camera's site/room in the inventory",
                 "dashboard_users user ../dave: key name must be 1-64 letters"):
        assert line in result.stdout, (line, result.stdout[-3000:])
    assert not secrets.exists()
    assert "Make the secrets" not in result.stdout


def test_zz_a_removed_user_gets_401_after_the_rerun(lab):
    """Last: it changes the server. bob leaves the inventory; his group index goes with him."""
    assert get(lab, "/groups/bob/index.html", "bob")[0] == 200
    removed = lab["run"]({name: rooms for name, rooms in USERS.items() if name != "bob"}, "removed")
    assert removed.returncode == 0, removed.stdout[-5000:]
    for path in ("/", "/groups/bob/index.html", "/rooms/north/102.html"):
        assert get(lab, path, "bob")[0] == 401, path
    assert get(lab, "/rooms/north/101.html", "alice")[0] == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and lab["box"].run("test", "-e", f"{DASHBOARD}/groups/bob/index.html",
                                                         check=False).returncode == 0:
        time.sleep(2)
    assert get(lab, "/groups/bob/index.html", "it-admin")[0] == 404


def test_a_vault_encrypted_ca_key_without_a_dashboard_certificate_is_named_with_the_fix(tmp_path):
    """A school set up before the dashboard had a certificate: the run says what to decrypt."""
    secrets = tmp_path / "secrets"
    inventory = ansible_lab.write_inventory(tmp_path / "hosts.yml", {"all": {
        "vars": {"mqtt_host": "127.0.0.1", "secrets_dir": str(secrets)},
        # Unreachable: only the secrets, made on the control node, are wanted of these runs.
        "children": {"servers": {"hosts": {"server": {"ansible_host": "192.0.2.1", "ansible_connection": "ssh",
                                                      "ansible_ssh_common_args": "-o ConnectTimeout=1"}}},
                     "cameras": {"hosts": {"pi-a": {"device_id": "pi-a", "site": "north", "room": "101"}}}}}})
    ansible_lab.playbook(inventory, "--limit", "server")
    assert (secrets / "pki" / "dashboard.crt").is_file() and (secrets / "pki" / "dashboard.key").is_file()
    (secrets / "pki" / "dashboard.crt").unlink()
    vault_password = tmp_path / "vault-password"
    vault_password.write_text("correct horse battery staple\n")
    ansible_lab.vault_encrypt(vault_password, secrets / "pki" / "ca.key")
    result = ansible_lab.playbook(inventory, "--limit", "server", "--vault-password-file", str(vault_password))
    assert result.returncode != 0
    assert "pki/ca.key is vault-encrypted and" in result.stdout, result.stdout[-3000:]
    assert "run ansible-vault decrypt on ca.key for this one run" in result.stdout
