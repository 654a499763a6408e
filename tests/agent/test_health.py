"""The board's health figures for the stats messages: CPU temperature from the kernel's thermal zones, load."""

from pathlib import Path

import pytest

from edge_agent.agent.health import cpu_temperature_c, load_1m


def thermal_zone(root, index, kind, millidegrees):
    zone = root / f"thermal_zone{index}"
    zone.mkdir(parents=True)
    (zone / "type").write_text(kind + "\n")
    (zone / "temp").write_text(f"{millidegrees}\n")


def test_cpu_temperature_from_a_pi_thermal_zone(tmp_path):
    thermal_zone(tmp_path, 0, "cpu-thermal", 48312)
    assert cpu_temperature_c(root=tmp_path) == pytest.approx(48.312)


def test_cpu_zone_is_preferred_over_earlier_zones(tmp_path):
    thermal_zone(tmp_path, 0, "acpitz", 27800)
    thermal_zone(tmp_path, 1, "iwlwifi_1", 40000)
    thermal_zone(tmp_path, 2, "x86_pkg_temp", 61000)
    assert cpu_temperature_c(root=tmp_path) == 61.0


def test_zones_are_ordered_by_number_and_unreadable_ones_skipped(tmp_path):
    thermal_zone(tmp_path, 10, "acpitz", 10000)
    thermal_zone(tmp_path, 2, "acpitz", 20000)
    broken = tmp_path / "thermal_zone1"
    broken.mkdir()
    (broken / "type").write_text("iwlwifi_1\n")  # no temp: the chip is down
    assert cpu_temperature_c(root=tmp_path) == 20.0


def test_no_thermal_zone_gives_none(tmp_path):
    assert cpu_temperature_c(root=tmp_path) is None
    assert cpu_temperature_c(root=tmp_path / "missing") is None


def test_cpu_temperature_on_this_machine_is_none_or_plausible():
    value = cpu_temperature_c()
    assert value is None or -40 < value < 130


def test_load_is_the_kernels_one_minute_average():
    kernel = float(Path("/proc/loadavg").read_text().split()[0])
    # The kernel updates it every 5 s: two reads a moment apart agree to well within one runnable task.
    assert load_1m() == pytest.approx(kernel, abs=0.5)
