"""``edge-collector bench dashboard`` at a tiny scale: it builds its school, measures each figure and
prints them (the figures themselves are for the README, never asserted)."""

import json
import subprocess
import sys

from support import REPO


def test_the_dashboard_bench_runs_every_step_and_reports_each_figure(tmp_path):
    result = subprocess.run([sys.executable, "-m", "edge_agent.collector.cli", "bench", "dashboard", "--rooms", "4",
                             "--in-class", "2", "--weeks", "1", "--minutes", "2", "--rate", "20",
                             "--ingest-devices", "4", "--ingest-windows", "5", "--keep", str(tmp_path / "school"),
                             "--json"], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    # One week back from today holds five weekdays of five lessons per room, and two rooms are in one now.
    assert figures["first_build"]["lessons"] == 4 * 5 * 5 + 2
    assert figures["refresh"]["cpu_s_mean"] > 0 and figures["previous_refresh"]["charts"] == 2 * 3
    assert figures["index"]["kb"] > 0 and figures["room"]["kb"] > figures["index"]["kb"] / 10
    assert set(figures["ingest"]) == {"alone", "beside the dashboard worker", "beside the previous way"}
    assert all(row["windows"] == 4 * 5 and row["p95_ms"] > 0 for row in figures["ingest"].values())
    assert (tmp_path / "school" / "www" / "index.html").is_file()
