"""The dashboard behind nginx as ansible/site.yml sets it up: TLS only, a login, each instructor their rooms;
the fleet's metrics for IT alone, and Debian's Prometheus and Alertmanager beside them.

One server container (broker, collector, nginx, Prometheus); the cameras are in the inventory, for their
rooms, but the runs are limited to the server. Lessons of rooms north/101 and north/102 are
written into the collector's store on the server, and the checks look from outside as a
browser would: Python's urllib and ssl with the school CA the secrets role made.
"""

import base64
import functools
import hashlib
import http.client
import importlib.util
import json
import re
import ssl
import statistics
import subprocess
import time
import urllib.request
import warnings

import pytest

from support import ansible_lab, browser, container, free_port

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(ansible_lab.unavailable() is not None, reason=str(ansible_lab.unavailable()))]

USERS = {"alice": ("north/101",), "bob": ("north/1*",), "it-admin": ("all",)}
PASSWORDS = {"alice": "alice correct horse", "bob": "bob battery staple", "it-admin": "it: long & random!",
             "scraper": "scrape & nothing else"}
# Logins that may read /metrics and nothing of the dashboard.
SCRAPERS = ("scraper",)
DASHBOARD = "/var/lib/edge-collector/dashboard"
BAN = {"collector_web_ban_maxretry": 30, "collector_web_ban_findtime": 120, "collector_web_ban_bantime": 20}
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
# Fresh stats for pi-a (heard from now, 0.8 frames a second against a target of 1); pi-b sent nothing
# but its status, so it has never been heard from. The dashboard and the alerts must say so alike.
FRESH_STATS = """
import time
from edge_agent.collector.store import Store
from edge_agent.common.contract import StatsPayload, format_utc
store = Store("sqlite:////var/lib/edge-collector/collector.sqlite3")
now = time.time()
store.add_stats([("pi-a", StatsPayload(device="pi-a", t=format_utc(now), uptime_s=600.0, fps=0.8, outbox_depth=2,
                                       camera="running", cpu_temp_c=52.0))], received_at=now)
store.touch("pi-a", site="north", room="101", seen_at=now)
store.close()
"""


def filter_plugin(name):
    """A module of the filter plugins beside site.yml (ansible.cfg's filter_plugins)."""
    spec = importlib.util.spec_from_file_location(name, ansible_lab.ANSIBLE_DIR / "filter_plugins" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The broker's and the dashboard's hashes come from the one module.
HTPASSWD = MOSQUITTO = filter_plugin("password_hashes")


def htpasswd_line_as_before(user, password):
    """What the role wrote before: SHA-512 crypt, with a salt made from the user and the password
    (so that salt alone confirmed a guess with one SHA-512)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    seed = hashlib.sha512(b"nginx\0" + user.encode() + b"\0" + password.encode()).digest()
    return crypt.crypt(password, "$6$rounds=5000$" + "".join(alphabet[byte & 0x3F] for byte in seed[:16]) + "$")


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
                "collector_web_tls_port": ports["https"], "collector_web_login_check_port": ports["check"],
                # Bans short enough to wait out, and room for the failed logins the other tests make.
                **BAN, "collector_web_rate": "10r/s", "collector_web_burst": 60,
                "dashboard_users": [{"name": name, "password": PASSWORDS[name], "rooms": list(rooms)}
                                    for name, rooms in users.items()],
                "collector_metrics": True, "collector_metrics_port": ports["metrics"],
                "metrics_scrapers": [{"name": name, "password": PASSWORDS[name]} for name in SCRAPERS],
                "collector_prometheus": True, "collector_prometheus_port": ports["prometheus"],
                "collector_alertmanager_port": ports["alertmanager"],
                "collector_prometheus_scrape_interval": "2s"}}},
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
        ports = {name: free_port() for name in ("mqtt", "http", "https", "check", "metrics", "prometheus",
                                                 "alertmanager")}
        secrets = tmp / "secrets"

        def run(users, name):
            inventory = ansible_lab.write_inventory(tmp / f"{name}.yml",
                                                    inventory_data(box, ports, secrets, wheels, users))
            return ansible_lab.playbook(inventory, "--limit", "server")

        runs = {"first": run(USERS, "first")}
        assert runs["first"].returncode == 0, runs["first"].stdout[-5000:] + runs["first"].stderr[-2000:]
        htpasswd_first = box.run("cat", "/etc/nginx/edge-dashboard/htpasswd").stdout
        seed = box.run("runuser", "-u", "edge-collector", "--", "/opt/edge-collector/venv/bin/python", "-c", SEED,
                       check=False, timeout=120)
        assert seed.returncode == 0, seed.stdout + seed.stderr
        runs["again"] = run(USERS, "again")
        lab = {"box": box, "ports": ports, "ca": secrets / "pki" / "ca.crt", "runs": runs, "run": run,
               "secrets": secrets, "htpasswd_first": htpasswd_first}
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


def fresh_jail(lab):
    """fail2ban's dashboard jail started afresh: no ban, no failure counted (the tests share 127.0.0.1)."""
    lab["box"].run("truncate", "-s", "0", "/var/log/nginx/edge-dashboard.error.log")
    lab["box"].run("fail2ban-client", "restart", "--unban", "edge-dashboard", timeout=60)
    deadline = time.monotonic() + 30
    while lab["box"].run("fail2ban-client", "status", "edge-dashboard", check=False).returncode:
        assert time.monotonic() < deadline, "the jail did not come back"
        time.sleep(0.5)
    while get(lab, "/")[0] != 401:  # a ban lifted reloads nginx; a spent burst refills
        assert time.monotonic() < deadline, get(lab, "/")[0]
        time.sleep(0.5)


def timed(lab, path, user, password):
    started = time.perf_counter()
    status, headers, _ = get(lab, path, user, password)
    return status, headers.get_all("WWW-Authenticate"), time.perf_counter() - started


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
    fresh_jail(lab)
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
        assert headers["Cache-Control"] == "no-store"


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


def bcrypt_salts(text):
    return {line.split(":", 1)[0]: line.split(":", 1)[1][:29] for line in text.splitlines() if line}


def test_the_server_keeps_only_bcrypt_hashes_with_the_kept_random_salts(lab):
    text = lab["box"].run("cat", "/etc/nginx/edge-dashboard/htpasswd").stdout
    lines = dict(line.split(":", 1) for line in text.splitlines() if line)
    logins = [*USERS, *SCRAPERS]
    assert set(lines) == set(logins) and all(value.startswith("$2b$10$") for value in lines.values()), lines
    assert not any(secret in text for secret in PASSWORDS.values())
    stat = lab["box"].run("stat", "-c", "%a %U:%G", "/etc/nginx/edge-dashboard/htpasswd").stdout.strip()
    assert stat == "640 root:www-data"
    # Each user's salt is the random one kept on the control node (no two alike), so the run
    # after the first wrote the same file; nothing in it comes from the password.
    salts = bcrypt_salts(text)
    assert len(set(salts.values())) == len(logins)
    for user in logins:
        kept = bytes.fromhex((lab["secrets"] / "salts" / "dashboard" / user).read_text())
        assert salts[user] == HTPASSWD.bcrypt_salt(kept, 10)
        assert HTPASSWD.htpasswd_hash(PASSWORDS[user], kept.hex(), 10) == lines[user]
    assert text == lab["htpasswd_first"]


def test_a_wrong_name_costs_the_same_as_a_wrong_password(lab):
    """nginx skips the hash for a name it does not know: the decoy check must make up for it."""
    fresh_jail(lab)
    known, unknown = [], []
    for _ in range(5):
        known.append(timed(lab, "/rooms/north/101.html", "alice", "wrong"))
        unknown.append(timed(lab, "/rooms/north/101.html", "mallory", "wrong"))
    assert {(status, tuple(header)) for status, header, _ in known + unknown} == \
        {(401, ('Basic realm="Classroom dashboard"', 'Basic realm="Classroom dashboard"'))}
    known_s = statistics.median(seconds for *_, seconds in known)
    unknown_s = statistics.median(seconds for *_, seconds in unknown)
    print(f"\nmedian 401 for a known name {known_s * 1000:.0f} ms, for an unknown one {unknown_s * 1000:.0f} ms")
    assert 0.5 < unknown_s / known_s < 2, (known_s, unknown_s)


def test_requests_beyond_the_rate_get_429(lab):
    statuses = [get(lab, "/")[0] for _ in range(150)]
    assert statuses.count(429) > 0 and set(statuses) == {401, 429}, statuses
    fresh_jail(lab)


def test_guessing_is_banned_and_the_right_password_works_after_the_ban(lab):
    fresh_jail(lab)
    statuses = [get(lab, "/rooms/north/101.html", "alice", f"guess {n}")[0] for n in range(30)]
    assert statuses[0] == 401 and set(statuses) <= {401, 403, 429}, statuses
    deadline = time.monotonic() + 15
    while get(lab, "/rooms/north/101.html", "alice")[0] != 403:
        assert time.monotonic() < deadline, "30 wrong passwords, and the right one still gets in"
        time.sleep(0.5)
    assert b"north/101" not in get(lab, "/rooms/north/101.html", "alice")[2]
    banned_at = time.monotonic()
    while (answer := get(lab, "/rooms/north/101.html", "alice"))[0] != 200:
        assert answer[0] == 403 and time.monotonic() - banned_at < BAN["collector_web_ban_bantime"] + 30, answer[0]
        time.sleep(1)
    print(f"\nbanned after {len(statuses)} guesses ({statuses.count(403)} answered 403), "
          f"let in again {time.monotonic() - banned_at:.0f} s later")


def test_another_local_user_reads_neither_the_store_nor_a_room(lab):
    box = lab["box"]
    store = "/var/lib/edge-collector/collector.sqlite3"
    modes = box.run("stat", "-c", "%a %U:%G", "/var/lib/edge-collector", store, DASHBOARD,
                    f"{DASHBOARD}/rooms/north/101.html").stdout.split("\n")
    assert modes[:4] == ["750 edge-collector:edge-collector", "600 edge-collector:edge-collector",
                         "750 edge-collector:edge-collector", "640 edge-collector:edge-collector"], modes
    for path in (store, f"{DASHBOARD}/rooms/north/101.html", f"{DASHBOARD}/index.html"):
        denied = box.run("runuser", "-u", "nobody", "--", "cat", path, check=False)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, (path, denied.stdout[:200])
    # nginx reads them as a member of the collector's group, and no more than that: not the store.
    assert box.run("runuser", "-u", "www-data", "--", "cat", store, check=False).returncode != 0
    assert get(lab, "/rooms/north/101.html", "alice")[0] == 200


def test_the_fleet_metrics_go_to_it_and_scrapers_and_never_to_an_instructor(lab):
    fresh_jail(lab)
    assert get(lab, "/metrics")[0] == 401
    assert get(lab, "/metrics", "alice", "wrong")[0] == 401
    for instructor in ("alice", "bob"):
        status, _, body = get(lab, "/metrics", instructor)
        assert status == 403 and b"edge_device" not in body, (instructor, status)
    for reader in ("it-admin", "scraper"):
        status, headers, body = get(lab, "/metrics", reader)
        assert status == 200 and b'edge_device_state{device="pi-a",room="101",site="north",state="online"} 1.0' \
            in body, (reader, status, body[:300])
        assert headers["Strict-Transport-Security"].startswith("max-age=")
    # A scraper reads the metrics and nothing of the dashboard.
    for path in ("/", "/index.html", "/rooms/north/101.html", "/rooms/north/101/lessons.csv", "/devices/pi-a.html"):
        status, _, body = get(lab, path, "scraper")
        assert status in (302, 403, 404) and b"north/101" not in body, (path, status)
    # The collector serves them on loopback only.
    assert listening_addresses(lab, "metrics") == {"0100007F"}


def test_an_instructor_takes_away_their_rooms_csvs_and_no_other_rooms(lab):
    status, _, lessons = get(lab, "/rooms/north/101/lessons.csv", "alice")
    assert status == 200 and lessons.startswith(b"start,end,minutes,minutes_with_faces,faces,angry"), lessons[:200]
    assert lessons.count(b"\n") == 3, lessons  # a header and the room's two lessons
    found = lab["box"].run("find", f"{DASHBOARD}/rooms/north/101", "-name", "2*.csv").stdout.split()
    assert len(found) == 2, found
    status, _, minutes = get(lab, found[0].removeprefix(DASHBOARD), "alice")
    assert status == 200 and minutes.startswith(b"start,faces,angry"), minutes[:200]
    page = get(lab, "/rooms/north/102.html", "alice")[0]
    for path in ("/rooms/north/102/lessons.csv", found[0].removeprefix(DASHBOARD).replace("/101/", "/102/")):
        status, _, body = get(lab, path, "alice")
        assert status == page and status in (403, 404) and b"start," not in body, (path, status)
    assert get(lab, "/rooms/north/102/lessons.csv", "bob")[0] == 200


# The addresses a port listens on, from the kernel's tables (hex, as there: 0100007F is 127.0.0.1).
LISTENERS = """
import sys
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).readlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.rsplit(":", 1)
        if state == "0A" and int(port, 16) == int(sys.argv[1]):
            print(address)
"""


def listening_addresses(lab, port):
    return set(lab["box"].run("python3", "-c", LISTENERS, str(lab["ports"][port])).stdout.split())


def prometheus_api(lab, path, port="prometheus"):
    with urllib.request.urlopen(f"http://127.0.0.1:{lab['ports'][port]}{path}", timeout=10) as answer:
        return json.load(answer)


def test_the_servers_prometheus_scrapes_the_collector_and_alerts_as_the_dashboard_flags(lab):
    seeded = lab["box"].run("runuser", "-u", "edge-collector", "--", "/opt/edge-collector/venv/bin/python", "-c",
                            FRESH_STATS, check=False, timeout=120)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    rules = prometheus_api(lab, "/api/v1/rules")["data"]["groups"]
    assert [group["name"] for group in rules] == ["edge-fleet"] and len(rules[0]["rules"]) == 9, rules
    deadline = time.monotonic() + 120
    expected = {("pi-a", "EdgeFpsLow"), ("pi-b", "EdgeDeviceSilent")}
    while True:
        fps = prometheus_api(lab, "/api/v1/query?query=edge_device_fps")["data"]["result"]
        alerts = prometheus_api(lab, "/api/v1/alerts")["data"]["alerts"]
        firing = {(alert["labels"]["device"], alert["labels"]["alertname"]) for alert in alerts
                  if alert["state"] == "firing"}
        _, _, index = get(lab, "/index.html", "it-admin")
        if firing == expected and b"0.8 fps, below 1" in index and index.count(b"not heard from") == 1:
            break
        assert time.monotonic() < deadline, (fps, firing, re.findall(rb"needs attention:</span> ([^<]*)", index))
        time.sleep(2)
    assert [(item["metric"]["device"], float(item["value"][1])) for item in fps] == [("pi-a", 0.8)]
    # Prometheus hands what fires to Alertmanager, on this server's loopback too.
    while True:
        received = {alert["labels"]["alertname"] for alert in prometheus_api(lab, "/api/v2/alerts", "alertmanager")}
        if {"EdgeFpsLow", "EdgeDeviceSilent"} <= received:
            break
        assert time.monotonic() < deadline + 60, received
        time.sleep(2)
    for port in ("prometheus", "alertmanager"):
        assert listening_addresses(lab, port) == {"0100007F"}, port


def test_the_school_ca_signs_for_no_other_name(lab, tmp_path):
    pki = lab["secrets"] / "pki"
    openssl = functools.partial(subprocess.run, check=True, capture_output=True, text=True, timeout=30)
    constraints = openssl(["openssl", "x509", "-in", str(pki / "ca.crt"), "-noout", "-ext", "nameConstraints"]).stdout
    assert "critical" in constraints and "IP:127.0.0.1/255.255.255.255" in constraints, constraints
    for name, extension in (("www.bank.example", "DNS:www.bank.example"), ("192.0.2.10", "IP:192.0.2.10")):
        key, csr, cert = (tmp_path / f"{name}.{kind}" for kind in ("key", "csr", "crt"))
        openssl(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"])
        (tmp_path / "ext").write_text(f"subjectAltName={extension}\n")
        openssl(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
                 "-CAserial", str(tmp_path / "ca.srl"), "-CAcreateserial", "-out", str(cert), "-days", "2",
                 "-extfile", str(tmp_path / "ext")])
        verified = subprocess.run(["openssl", "verify", "-CAfile", str(pki / "ca.crt"), str(cert)],
                                  capture_output=True, text=True, timeout=30)
        assert verified.returncode != 0 and "permitted subtree violation" in verified.stdout + verified.stderr, \
            verified.stdout + verified.stderr
    assert subprocess.run(["openssl", "verify", "-CAfile", str(pki / "ca.crt"), str(pki / "dashboard.crt")],
                          capture_output=True, timeout=30).returncode == 0


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


def test_zz_a_removed_user_gets_401_after_the_rerun_and_hashes_from_before_are_replaced(lab):
    """Last: it changes the server. bob leaves the inventory; his group index goes with him. The
    password files are put back as an earlier version wrote them (salts made from user and
    password): the run replaces them with the kept random salts."""
    fresh_jail(lab)
    assert get(lab, "/groups/bob/index.html", "bob")[0] == 200
    box = lab["box"]
    box.write("/etc/nginx/edge-dashboard/htpasswd",
              "".join(f"{user}:{htpasswd_line_as_before(user, PASSWORDS[user])}\n" for user in USERS))
    assert get(lab, "/groups/bob/index.html", "bob")[0] == 200  # nginx reads the file on every login
    collector_password = (lab["secrets"] / "mqtt" / "collector").read_text()
    old_salt = hashlib.sha512(b"collector\0" + collector_password.encode()).digest()[:12]
    box.write("/etc/mosquitto/passwd", f"collector:{MOSQUITTO.mosquitto_hash(collector_password, old_salt.hex())}\n")
    removed = lab["run"]({name: rooms for name, rooms in USERS.items() if name != "bob"}, "removed")
    assert removed.returncode == 0, removed.stdout[-5000:]
    salts = bcrypt_salts(box.run("cat", "/etc/nginx/edge-dashboard/htpasswd").stdout)
    before = bcrypt_salts(lab["htpasswd_first"])
    assert salts == {"alice": before["alice"], "it-admin": before["it-admin"], "scraper": before["scraper"]}
    passwd = box.run("cat", "/etc/mosquitto/passwd").stdout
    kept = bytes.fromhex((lab["secrets"] / "salts" / "mqtt" / "collector").read_text())
    assert f"collector:{MOSQUITTO.mosquitto_hash(collector_password, kept.hex())}\n" in passwd
    assert base64.b64encode(old_salt).decode() not in passwd
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
