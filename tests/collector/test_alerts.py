"""The alert rules IT's Prometheus runs fire exactly where the dashboard says a device needs attention.

A fleet of devices with every kind of problem is written into a real SQLite store; the dashboard's
verdicts (fleet.py) are read from it, and the metrics the collector serves for the same moment
are fed to Debian's promtool as input series, under the shipped rules: each alert must fire for
exactly the devices the dashboard gives that verdict, under the default thresholds and under
changed ones.
"""

import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.collector.alerts import render_rules, rules
from edge_agent.collector.config import parse_collector_config
from edge_agent.collector.fleet import Thresholds, fleet_health
from edge_agent.collector.metrics import FleetMetrics
from edge_agent.common.contract import StatsPayload, StatusPayload
from support import REPO

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (scripts/setup.sh installs it)")
# The collector role carries them (and installs edge-alerts.yml with collector_prometheus).
SHIPPED = REPO / "ansible" / "roles" / "collector" / "files" / "prometheus"
NOW = 1_795_000_000
TARGET = {"job": "edge-collector", "instance": "127.0.0.1:9464"}


def promtool(*args, cwd):
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_the_shipped_rules_are_the_ones_the_collector_writes_and_prometheus_accepts_them():
    assert (SHIPPED / "edge-alerts.yml").read_text() == render_rules(), \
        "ansible/roles/collector/files/prometheus/edge-alerts.yml is stale: edge-collector alert-rules --out it"
    loaded = yaml.safe_load(render_rules())["groups"][0]["rules"]
    assert [(rule["alert"], rule["expr"]) for rule in loaded] == [(rule.alert, rule.expr) for rule in rules()]
    checked = promtool("check", "rules", "edge-alerts.yml", cwd=SHIPPED)
    assert checked.returncode == 0 and f"{len(rules())} rules found" in checked.stdout, checked.stdout + checked.stderr


def test_the_shipped_unit_tests_pass():
    """Silent for longer than the threshold fires, an fps below 90% of its target fires, a healthy camera nothing."""
    tested = promtool("test", "rules", "edge-alerts.test.yml", cwd=SHIPPED)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def stats(device, at, **figures):
    return device, StatsPayload(device=device, t="2026-11-23T10:00:00Z", uptime_s=3600.0, **figures), at


HEALTHY = {"fps": 1.0, "detect_ms": 80.0, "classify_ms": 4.0, "faces_per_frame": 20.0, "outbox_depth": 0,
           "dropped_windows": 0, "camera": "running", "cpu_temp_c": 55.0, "rss_mb": 210.0, "outbox_failing": False,
           "load_1m": 0.6}
# (device, state or None when it sent no status, seconds since last heard or None when never,
#  [(seconds ago, stats figures)]).
FLEET = [
    ("pi-healthy", "online", 30, [(40, {})]),
    ("pi-offline", "offline", 30, [(40, {})]),
    ("pi-silent", "online", 600, [(620, {})]),
    ("pi-just-heard", "online", 290, [(290, {})]),
    ("pi-never", "online", None, []),
    ("pi-no-status", None, 600, []),
    ("pi-stopped", "stopped", 3600, [(3600, {})]),
    ("pi-stalled", "online", 30, [(40, {"camera": "stalled", "fps": 0.0})]),
    ("pi-stalled-off", "offline", 30, [(40, {"camera": "stalled"})]),
    ("pi-outbox-broken", "online", 30, [(300, {"outbox_depth": 2}), (40, {"outbox_depth": 5, "outbox_failing": True})]),
    ("pi-backlog", "online", 30, [(300, {"outbox_depth": 3}), (40, {"outbox_depth": 6})]),
    ("pi-backlog-steady", "online", 30, [(300, {"outbox_depth": 6}), (40, {"outbox_depth": 6})]),
    ("pi-backlog-starts", "online", 30, [(300, {"outbox_depth": 2}), (40, {"outbox_depth": 3})]),
    ("pi-backlog-small", "online", 30, [(300, {"outbox_depth": 1}), (40, {"outbox_depth": 2})]),
    ("pi-dropping", "online", 30, [(7200, {"dropped_windows": 1}), (40, {"dropped_windows": 3})]),
    ("pi-hot", "online", 30, [(40, {"cpu_temp_c": 85.0})]),
    ("pi-at-hot", "online", 30, [(40, {"cpu_temp_c": 80.0})]),
    ("pi-warm", "online", 30, [(40, {"cpu_temp_c": 75.0})]),
    ("pi-slow", "online", 30, [(40, {"fps": 0.5})]),
    ("pi-nearly", "online", 30, [(40, {"fps": 0.92})]),
    ("pi-just-below", "online", 30, [(40, {"fps": 0.85})]),
    ("pi-hall", "online", 30, [(40, {"fps": 1.5})]),
    ("pi-absurd-fps", "online", 30, [(40, {"fps": 500.0})]),
    ("pi-absurd-heat", "online", 30, [(40, {"cpu_temp_c": 200.0})]),
    ("pi-absurd-load", "online", 30, [(40, {"load_1m": 5000.0})]),
    ("pi-no-stats", "online", 30, []),
]
CONFIGS = {
    "defaults": "fleet: {fps_by_device: {pi-hall: 2.0}}\n",
    "changed": "fleet: {fps: 0.5, fps_by_device: {pi-hall: 1.0}, silent_after_min: 15, hot_c: 70}\n",
}


def write_fleet(store):
    for device, state, heard, rows in FLEET:
        room = "101"
        if state is not None:
            store.set_status(StatusPayload(state=state, device=device, camera="running", version="0.1.0"),
                             site="north", room=room, received_at=NOW - (heard or 0))
        if heard is not None:
            store.touch(device, site="north", room=room, seen_at=NOW - heard)
        for ago, figures in rows:
            store.add_stats([(device, StatsPayload(device=device, t="2026-11-23T10:00:00Z", uptime_s=3600.0,
                                                   **(HEALTHY | figures)))], received_at=NOW - ago)


def series_values(value):
    text = "Inf" if value == float("inf") else repr(value)
    return f"{text}+0x10"


def promtool_case(exposition, health, limits):
    """A promtool test: the exposition as constant series, and for every rule the alerts the verdicts call for."""
    series = []
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if not sample.name.startswith("edge_"):
                continue
            labels = ", ".join(f'{key}="{value}"' for key, value in sorted((sample.labels | TARGET).items()))
            series.append({"series": f"{sample.name}{{{labels}}}", "values": series_values(sample.value)})
    expected = {rule.alert: [] for rule in rules()}
    for item in health:
        device = item.device
        for problem in item.problems:
            matching = [rule for rule in rules() if re.match(rule.verdict, problem)]
            assert len(matching) == 1, (device.device, problem, [rule.alert for rule in matching])
            rule = matching[0]
            labels = {"severity": "warning", **TARGET, "site": device.site, "room": device.room,
                      "device": device.device}
            if rule.alert == "EdgeDeviceOffline":
                labels["state"] = "offline"
            if rule.alert == "EdgeCameraProblem":
                labels["camera"] = item.camera
            summary = rule.summary
            for key, value in labels.items():
                summary = summary.replace(f"{{{{ $labels.{key} }}}}", value)
            expected[rule.alert].append({"exp_labels": labels, "exp_annotations": {
                "summary": summary, "description": rule.description}})
    return {"rule_files": ["edge-alerts.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": "5m", "alertname": name, "exp_alerts": alerts}
                            for name, alerts in expected.items()]}]}, expected


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_each_alert_fires_for_exactly_the_devices_the_dashboard_says_need_attention(store, tmp_path, config_name):
    config = parse_collector_config(CONFIGS[config_name])
    limits = Thresholds.from_config(config.fleet)
    write_fleet(store)
    health = fleet_health(store.devices(), store.fleet_stats(NOW), NOW, limits)
    registry = CollectorRegistry()
    registry.register(FleetMetrics(store, limits, clock=lambda: NOW))
    case, expected = promtool_case(generate_latest(registry).decode(), health, limits)
    (tmp_path / "edge-alerts.yml").write_text(render_rules())
    (tmp_path / "case.yml").write_text(yaml.safe_dump(case, sort_keys=False))
    tested = promtool("test", "rules", "case.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout[-6000:] + tested.stderr[-2000:]
    flagged = {item.device.device for item in health if item.problems}
    if config_name == "defaults":
        # Every verdict occurs, so every rule is shown to fire where it should, and only there.
        assert all(expected.values()), {name: len(alerts) for name, alerts in expected.items()}
        assert {"pi-hot", "pi-at-hot", "pi-slow", "pi-just-below", "pi-hall", "pi-silent",
                "pi-backlog-starts"} <= flagged
        assert not {"pi-healthy", "pi-warm", "pi-nearly", "pi-stopped", "pi-backlog-steady", "pi-backlog-small",
                    "pi-just-heard"} & flagged
    else:
        # The config's thresholds move the dashboard's verdicts and the alerts alike.
        assert "pi-warm" in flagged and not {"pi-slow", "pi-hall", "pi-silent"} & flagged
