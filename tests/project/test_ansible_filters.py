"""The Ansible filter plugins, run as Ansible runs them on the control node: the password
hashes the server keeps (ansible/filter_plugins, shared by the broker and collector roles; checked
against mosquitto_passwd and the system's crypt) and the dashboard users' checks (the collector role's).

The lab tests (tests/system/test_ansible.py, test_dashboard_private.py) see the same hashes
accepted by a real mosquitto and a real nginx; these pin the construction itself.
"""

import base64
import hashlib
import importlib.util
import re
import shutil
import subprocess
import warnings

import pytest
from ansible.errors import AnsibleFilterError

from support import REPO

ANSIBLE = REPO / "ansible"


def plugin(folder, name):
    path = folder / "filter_plugins" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{folder.name}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# One module hashes both kinds of password: mosquitto's and the dashboard's.
mosquitto = htpasswd = plugin(ANSIBLE, "password_hashes")
access = plugin(ANSIBLE / "roles" / "collector", "dashboard_access")


def system_crypt():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            pytest.skip("this Python has no crypt module (3.13 dropped it)")
    return crypt.crypt


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_the_broker_hash_is_mosquitto_passwds_own_line_for_the_kept_salt(tmp_path):
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "pi-a", "a camera's password"], check=True,
                   capture_output=True, timeout=30)
    user, line = passwd.read_text().strip().split(":", 1)
    _, kind, iterations, salt, _ = line.split("$")
    assert (kind, iterations) == ("7", "101")
    assert mosquitto.mosquitto_hash("a camera's password", base64.b64decode(salt).hex()) == line


def test_the_broker_salt_is_the_kept_random_one_whatever_the_password():
    salt = "00112233445566778899aabb"
    lines = [mosquitto.mosquitto_hash(password, salt) for password in ("first password", "second password")]
    assert [line.split("$")[3] for line in lines] == [base64.b64encode(bytes.fromhex(salt)).decode()] * 2
    assert lines[0] != lines[1]
    for bad in ("", "xyz", "00112233"):
        with pytest.raises(AnsibleFilterError, match=r"the salt must be 24 hex digits \(the secrets role's"):
            mosquitto.mosquitto_hash("pw", bad)


def test_a_dashboard_hash_is_bcrypt_at_the_cost_the_system_crypt_checks():
    crypt = system_crypt()
    salt = "0123456789abcdef0123456789abcdef"
    line = htpasswd.htpasswd_hash("alice correct horse", salt, 10)
    assert line.startswith("$2b$10$") and len(line) == 60
    assert crypt("alice correct horse", line) == line
    assert crypt("alice wrong horse", line) != line


def test_a_dashboard_salt_owes_nothing_to_the_password():
    """What the salt shows must not let a guess be tested by anything cheaper than bcrypt itself:
    it is the kept random salt, the same for any password, never one derived from the password."""
    salt = "f" * 8 + "0" * 24
    first, second = (htpasswd.htpasswd_hash(password, salt, 4) for password in ("one password", "another"))
    assert first[:29] == second[:29] == htpasswd.bcrypt_salt(bytes.fromhex(salt), 4)
    assert first != second
    derived = hashlib.sha512(b"nginx\0alice\0one password").digest()[:16]
    assert htpasswd.bcrypt_salt(derived, 4) != first[:29]


@pytest.mark.parametrize("salt, password, cost, message", [
    ("abc", "pw", 10, "the salt must be 32 hex digits"),
    ("00" * 16, "x" * 73, 10, "longer than 72 bytes"),
    ("00" * 16, "a\0b", 10, "holds a NUL"),
    ("00" * 16, "pw", 3, "collector_web_password_cost 3 is not a bcrypt cost"),
])
def test_a_dashboard_hash_refuses_what_bcrypt_would_cut_or_cannot_take(salt, password, cost, message):
    with pytest.raises(AnsibleFilterError, match=message):
        htpasswd.htpasswd_hash(password, salt, cost)


def test_names_and_patterns_ending_in_a_newline_are_refused():
    users = [{"name": "alice\n", "password": "x", "rooms": ["north/101"]},
             {"name": "bob", "password": "x", "rooms": ["north/101\n"]},
             {"name": "carol", "password": "x" * 73, "rooms": ["all"]}]
    problems = access.dashboard_problems(users, ["north/101"])
    assert problems == [
        "dashboard_users user 'alice\\n': key name must be 1-64 letters, digits, _ . - (it names a folder and a login)",
        "dashboard_users user bob: key rooms: 'north/101\\n' is not all or site/room (wildcards * ?)",
        "dashboard_users user carol: key password is longer than 72 bytes or holds a NUL; bcrypt would check only "
        "its start: choose a shorter one (six random words are plenty)"]


def test_metrics_settings_that_do_not_fit_together_are_named_before_anything_changes():
    users = [{"name": "it-admin", "password": "x", "rooms": ["all"]}]
    assert access.metrics_problems([{"name": "prom", "password": "y"}], users, True, True, True) == []
    assert access.metrics_problems([], users, False, False, True) == [
        "collector_prometheus: true needs collector_metrics: true (Prometheus scrapes the collector's metrics port)"]
    problems = access.metrics_problems([{"name": "it-admin", "password": "y"}, {"name": "prom"},
                                        {"name": "graf", "password": "z", "rooms": ["all"]}], users, True, False)
    assert problems == [
        "metrics_scrapers: nginx serves /metrics only with collector_metrics: true and collector_web_server: true; "
        "set both or remove metrics_scrapers",
        "metrics_scrapers user it-admin: key name is used twice (by dashboard_users or metrics_scrapers)",
        "metrics_scrapers user prom: key password is missing; put it in Ansible Vault (ansible-vault encrypt_string) "
        "and set it there",
        "metrics_scrapers user graf: unknown key rooms (keys: name, password)"]


def test_an_instructors_rules_grant_their_rooms_csvs_and_no_others():
    rules = access.dashboard_path_rules([{"name": "alice", "password": "x", "rooms": ["north/101"]}])

    def granted(uri):
        return any(re.search(rule, f"alice:{uri}") for rule in rules)

    assert granted("/rooms/north/101/lessons.csv") and granted("/rooms/north/101/20261123T1000.csv")
    assert not granted("/rooms/north/102/lessons.csv") and not granted("/rooms/north/1010/lessons.csv")
    assert not granted("/metrics")
