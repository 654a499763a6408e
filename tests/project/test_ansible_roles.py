"""The Ansible roles stand on their own: each documents itself, none reaches outside itself, and
what the playbook hands them from the project is there.

A role carries the files it installs (``files/``); the project's systemd units, which the
packages and the tests use too, are passed in by site.yml (``playbook_dir``) instead of copied,
and a role without them stops naming the variable. The filters more than one role uses live
once, beside site.yml, where ansible.cfg points. No playbook runs here: tests/system/test_ansible.py
runs site.yml against real hosts.
"""

import configparser
import importlib.util
import re

import pytest
import yaml

from support import REPO

ANSIBLE = REPO / "ansible"
ROLES = sorted(path for path in (ANSIBLE / "roles").iterdir() if (path / "tasks" / "main.yml").is_file())
# ``{{ role_path }}/..``: a path out of the role, into whatever happens to be around it.
OUT_OF_THE_ROLE = re.compile(r"role_path\s*}}\s*/+\s*\.\.")
# What site.yml passes each role from the project tree, and the file it must name.
UNITS = {"edge_agent": ("edge_agent_unit_src", REPO / "systemd" / "edge-agent.service"),
         "collector": ("collector_unit_src", REPO / "systemd" / "edge-collector.service")}


def defaults(role):
    return yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}


def site_roles():
    """``{role name: its entry's vars}`` over every play of site.yml."""
    entries = {}
    for play in yaml.safe_load((ANSIBLE / "site.yml").read_text()):
        for entry in play.get("roles", []):
            entry = {"role": entry} if isinstance(entry, str) else entry
            entries[entry["role"]] = entry.get("vars", {})
    return entries


def filter_module(path):
    spec = importlib.util.spec_from_file_location(f"filters_{path.parent.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def shared_filter_dirs():
    """The filter plugin directories ansible.cfg names, as paths (relative to ansible.cfg, as Ansible reads them)."""
    config = configparser.ConfigParser()
    config.read(ANSIBLE / "ansible.cfg")
    value = config.get("defaults", "filter_plugins", fallback="")
    return [(ANSIBLE / part.strip()).resolve() for part in value.split(":") if part.strip()]


def test_the_roles_are_found():
    assert {role.name for role in ROLES} >= {"secrets", "broker", "collector", "edge_agent"}


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_every_default_is_documented_in_the_roles_readme(role):
    readme = role / "README.md"
    assert readme.is_file(), f"ansible/roles/{role.name} has no README.md"
    text = readme.read_text()
    missing = [name for name in defaults(role) if not re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text)]
    assert not missing, f"ansible/roles/{role.name}/README.md does not document {', '.join(missing)}"
    for section in ("## Requirements", "## Role variables", "## What it changes", "## Dependencies",
                    "## Example playbook"):
        assert section in text, f"ansible/roles/{role.name}/README.md has no section {section!r}"


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_no_role_reaches_outside_itself(role):
    out = sorted(str(path.relative_to(ANSIBLE)) for path in role.rglob("*")
                 if path.is_file() and OUT_OF_THE_ROLE.search(path.read_text(errors="replace")))
    assert not out, f"role_path }}}}/.. in {', '.join(out)}: carry the file in the role's files/ or have the " \
                    "playbook pass its path"


@pytest.mark.parametrize("role", sorted(UNITS))
def test_the_playbook_passes_the_projects_unit_and_the_role_requires_it(role):
    variable, unit = UNITS[role]
    assert defaults(ANSIBLE / "roles" / role)[variable] == "", f"{variable}'s default must be empty (required)"
    passed = site_roles()[role].get(variable, "")
    assert "{{ playbook_dir }}" in passed, f"site.yml does not pass {variable} relative to playbook_dir"
    assert (ANSIBLE / passed.replace("{{ playbook_dir }}", ".")).resolve() == unit
    # The role's first task stops a run without it, before anything changes, naming the variable.
    first = yaml.safe_load((ANSIBLE / "roles" / role / "tasks" / "main.yml").read_text())[0]
    assert "ansible.builtin.assert" in first and variable in first["ansible.builtin.assert"]["that"]
    assert f"variable {variable} is" in first["ansible.builtin.assert"]["fail_msg"]


def test_the_collector_carries_its_alert_rules():
    collector = ANSIBLE / "roles" / "collector"
    rules = defaults(collector)["collector_alert_rules_src"]
    assert "{{" not in rules and (collector / "files" / rules).is_file()


def test_each_filter_is_defined_once_and_the_shared_ones_where_ansible_cfg_looks():
    shared = shared_filter_dirs()
    assert shared == [ANSIBLE / "filter_plugins"], "ansible.cfg must name filter_plugins beside site.yml"
    where = {}
    for path in sorted([*shared[0].glob("*.py"), *(ANSIBLE / "roles").glob("*/filter_plugins/*.py")]):
        for name in filter_module(path):
            where.setdefault(name, []).append(str(path.relative_to(ANSIBLE)))
    twice = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not twice, f"filters defined more than once: {twice}"
    assert where["mosquitto_hash"] == where["htpasswd_hash"] == ["filter_plugins/password_hashes.py"]


def test_the_roles_use_the_shared_filters_they_need():
    """The broker's password file and the collector's logins hash with the shared filters; the
    role READMEs say where those come from."""
    assert "mosquitto_hash" in (ANSIBLE / "roles" / "broker" / "templates" / "passwd.j2").read_text()
    assert "htpasswd_hash" in (ANSIBLE / "roles" / "collector" / "tasks" / "web.yml").read_text()
    for role in ("broker", "collector"):
        assert "filter_plugins/password_hashes.py" in (ANSIBLE / "roles" / role / "README.md").read_text()
