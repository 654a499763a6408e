"""Prometheus alert rules that mirror the dashboard's "needs attention" verdicts (fleet.py), one rule per verdict.

The rules are written from fleet.py's own constants (the fps shortfall, the outbox that counts
as growing, the plausible range of each figure) and compare against the thresholds the collector
exports from its config (``edge_fleet_silent_after_seconds``, ``edge_fleet_hot_celsius``,
``edge_device_fps_target``; metrics.py), so a changed config moves the alerts and the dashboard
together, and a changed constant changes the rules written here. The project ships them as
``ansible/roles/collector/files/prometheus/edge-alerts.yml`` (the collector role installs them);
``edge-collector alert-rules`` prints them.

Each rule fires exactly when the dashboard gives a device that verdict, on the same figures:
the alerts have no ``for:`` delay of their own (the verdicts wait for ``silent_after_min``
where waiting is wanted). Annotations use only labels, never values, so they read the same on
every evaluation.
"""

import json
import textwrap
from dataclasses import dataclass

from .fleet import CAMERA_PROBLEMS, FPS_SHORTFALL, OUTBOX_GROWING_MIN, PLAUSIBLE
from .metrics import STATS_GAUGES

GROUP = "edge-fleet"
SEVERITY = "warning"
# The collector that exported a series, and the device it is about.
SAME_COLLECTOR = "on(instance, job)"
SAME_DEVICE = "on(instance, job, site, room, device)"
WHERE = "{{ $labels.device }} ({{ $labels.site }}/{{ $labels.room }})"
EXPR_WIDTH = 100


@dataclass(frozen=True)
class Rule:
    alert: str
    verdict: str  # a regular expression matching the start of the dashboard's words for the problem
    expr: str
    summary: str
    description: str


def _metric(field: str) -> tuple[str, float]:
    """The metric a stats field is exported as, and the factor from the field's unit to the metric's."""
    return next((name, scale) for name, source, scale, _ in STATS_GAUGES if source == field)


def _bound(field: str, side: int) -> str:
    name, scale = _metric(field)
    return repr(float(PLAUSIBLE[field][side] * scale))


def _plausible(field: str) -> str:
    name, _ = _metric(field)
    return f"{name} >= {_bound(field, 0)} and {name} <= {_bound(field, 1)}"


def _implausible() -> str:
    parts = []
    for field in PLAUSIBLE:
        name, _ = _metric(field)
        parts += [f"{name} < {_bound(field, 0)}", f"{name} > {_bound(field, 1)}"]
    return " or ".join(parts)


def rules() -> list[Rule]:
    """The rules, in the order the dashboard lists a device's problems."""
    cameras = "|".join(CAMERA_PROBLEMS)
    return [
        Rule("EdgeDeviceOffline", r"offline", 'edge_device_state{state="offline"} == 1',
             f"{WHERE} is offline",
             "The device's last word was offline: its Last Will (the broker lost it) or a status it sent."),
        Rule("EdgeDeviceSilent", r"not heard from",
             f"edge_device_last_seen_age_seconds > {SAME_COLLECTOR} group_left() edge_fleet_silent_after_seconds"
             f' and {SAME_DEVICE} edge_device_state{{state=~"online|unknown"}} == 1',
             f"{WHERE} has not been heard from",
             "No message from the device for longer than fleet.silent_after_min, and it did not say it stopped."),
        Rule("EdgeCameraProblem", r"camera ",
             f'edge_device_camera{{camera=~"{cameras}"}} == 1'
             f' unless {SAME_DEVICE} edge_device_state{{state=~"offline|stopped"}} == 1',
             f"{WHERE}: camera {{{{ $labels.camera }}}}",
             "The camera stopped delivering frames; the agent reopens it with backoff."),
        Rule("EdgeOutboxFailing", r"outbox cannot be written", "edge_device_outbox_failing == 1",
             f"{WHERE}: its outbox cannot be written",
             "The device cannot write windows to its SD card (full or failing); it holds them in memory meanwhile."),
        Rule("EdgeOutboxGrowing", r"outbox growing",
             f"edge_device_outbox_depth >= {OUTBOX_GROWING_MIN} and edge_device_outbox_growth > 0"
             " unless edge_device_outbox_failing == 1",
             f"{WHERE}: its outbox is growing",
             "Windows wait on the device and more than ten minutes ago: the broker is not taking them."),
        Rule("EdgeWindowsDropped", r"\d+ windows? dropped", "edge_device_windows_dropped_24h > 0",
             f"{WHERE} dropped windows in the last 24 hours",
             "Windows older than the device's outbox.max_age_h were deleted unsent."),
        Rule("EdgeCpuHot", r"CPU ",
             f"edge_device_cpu_temperature_celsius >= {SAME_COLLECTOR} group_left() edge_fleet_hot_celsius"
             f" and {_plausible('cpu_temp_c')}",
             f"{WHERE}: CPU at or above fleet.hot_c",
             "The board runs hot: check its ventilation and case."),
        Rule("EdgeFpsLow", r"\S+ fps, below",
             f"edge_device_fps < {FPS_SHORTFALL!r} * edge_device_fps_target and {_plausible('fps')}",
             f"{WHERE} analyses fewer frames than its target",
             f"Below {FPS_SHORTFALL:.0%} of the frames per second it should analyse (fleet.fps, fleet.fps_by_device)."),
        Rule("EdgeStatsImplausible", r"implausible ", _implausible(),
             f"{WHERE} sends figures no working device could",
             "A figure outside what a working Pi can report: a broken sensor, or something that is not the agent."),
    ]


def render_rules() -> str:
    """The rules as a Prometheus rule file, every line short enough to read (and for ansible-lint)."""
    lines = ["# Alerts for the classroom cameras, one per \"needs attention\" verdict of the dashboard's device",
             "# table, on the same figures and thresholds. Written by `edge-collector alert-rules`: change",
             "# edge_agent/collector/fleet.py, not this file.",
             "groups:", f"  - name: {GROUP}", "    rules:"]
    for rule in rules():
        # A folded block joins its lines with single spaces: the expression reads back unchanged.
        expr = textwrap.wrap(rule.expr, EXPR_WIDTH, break_long_words=False, break_on_hyphens=False)
        lines += [f"      - alert: {rule.alert}", "        expr: >-", *(f"          {line}" for line in expr),
                  "        labels:", f"          severity: {SEVERITY}", "        annotations:",
                  f"          summary: {json.dumps(rule.summary)}",
                  f"          description: {json.dumps(rule.description)}"]
    return "\n".join(lines) + "\n"
