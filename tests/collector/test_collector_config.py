import pytest

from edge_agent.collector.config import (
    CollectorConfig,
    load_collector_config,
    parse_collector_config,
    server_timezone,
)
from edge_agent.common.config import ConfigError
from support import REPO


def test_the_example_config_is_valid_and_matches_the_defaults():
    example = load_collector_config(REPO / "config" / "collector.yaml")
    assert example == CollectorConfig()


def test_every_key_is_in_the_example_config():
    text = (REPO / "config" / "collector.yaml").read_text()
    for section, model in CollectorConfig.model_fields.items():
        assert f"\n{section}:\n" in text
        for key in model.annotation.model_fields:
            assert f" {key}:" in text, f"{section}.{key} is not documented in config/collector.yaml"


def test_defaults():
    config = parse_collector_config("")
    assert config.sessions.interested == ("happy", "surprise", "neutral")
    assert config.sessions.gap_min == 15
    assert config.dashboard.refresh_s == 60
    assert config.mqtt.client_id.startswith("edge-collector-")
    assert config.mqtt.shared_group is None
    assert config.metrics.port is None  # no metrics unless asked for


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    config = parse_collector_config("store:\n  url: sqlite:///data/c.db\ndashboard:\n  output_dir: site\n",
                                    base=tmp_path)
    assert config.store.resolved_url() == f"sqlite:///{tmp_path}/data/c.db"
    assert config.dashboard.resolved_output_dir() == tmp_path / "site"
    absolute = parse_collector_config("store:\n  url: sqlite:////srv/c.db\n", base=tmp_path)
    assert absolute.store.url == "sqlite:////srv/c.db"


def test_the_default_store_and_dashboard_live_in_the_state_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    config = parse_collector_config("")
    assert config.store.resolved_url() == f"sqlite:///{tmp_path}/state/collector.sqlite3"
    assert (tmp_path / "state").is_dir()
    assert config.dashboard.resolved_output_dir() == tmp_path / "state" / "dashboard"


@pytest.mark.parametrize("text, message", [
    ("sessions:\n  interested: [happy, bored]\n", r"c.yaml line 2: sessions.interested: .*unknown emotion bored"),
    ("sessions:\n  interested: [angry, disgust, fear, happy, sad, surprise, neutral]\n", "nothing would count"),
    ("sessions:\n  gap_min: 0\n", "line 2: sessions.gap_min"),
    ("dashboard:\n  refresh: 30\n", "line 2: unknown key dashboard.refresh"),
    ("mqtt:\n  shared_group: a/b\n", "line 2: mqtt.shared_group"),
    ("mqtt:\n  stats_interval_s: 60\n", "unknown key mqtt.stats_interval_s"),
    ("mqtt:\n  protocol: 3.1.1\n  shared_group: school\n", "shared_group needs protocol 5"),
    ("dashboard:\n  timezone: Mars/Olympus\n", "line 2: dashboard.timezone: .*unknown time zone 'Mars/Olympus'"),
    ("metrics:\n  port: 70000\n", "line 2: metrics.port"),
    ("metrics:\n  bind: 0.0.0.0\n", "line 2: unknown key metrics.bind"),
])
def test_mistakes_name_the_line_and_key(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_collector_config(text, source="c.yaml")


def test_repeated_emotions_are_kept_once():
    config = parse_collector_config("sessions:\n  interested: [happy, happy, neutral]\n")
    assert config.sessions.interested == ("happy", "neutral")


def test_the_time_zone_defaults_to_the_servers():
    assert str(parse_collector_config("").dashboard.resolved_timezone()) == str(server_timezone())
    assert str(parse_collector_config("dashboard:\n  timezone: Asia/Tokyo\n").dashboard.resolved_timezone()) \
        == "Asia/Tokyo"
