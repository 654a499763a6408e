import re

import pytest
from pydantic import BaseModel

from edge_agent.agent.config import AgentConfig, load_config, parse_config
from edge_agent.common.config import ConfigError
from support import REPO, run_cli

EXAMPLE = REPO / "config" / "edge-agent.yaml"


def field_paths(model, prefix=()):
    for name, info in model.model_fields.items():
        annotation = info.annotation
        nested = [t for t in getattr(annotation, "__args__", (annotation,)) if isinstance(t, type)
                  and issubclass(t, BaseModel)]
        yield (*prefix, name)
        if nested:
            yield from field_paths(nested[0], (*prefix, name))


def test_example_config_documents_every_key():
    text = EXAMPLE.read_text()
    missing = [".".join(path) for path in field_paths(AgentConfig)
               if not re.search(rf"^\s*#?\s*{path[-1]}:", text, re.MULTILINE)]
    assert missing == []


def test_example_config_holds_the_defaults():
    example = load_config(EXAMPLE).model_dump()
    defaults = AgentConfig().model_dump()
    assert example == defaults


def test_empty_config_is_all_defaults():
    config = parse_config("")
    assert config.window.length_s == 60 and config.window.min_group == 3
    assert config.detector.scale_factor == 1.1 and config.detector.min_neighbors == 5
    assert config.detector.min_size == 30 and config.camera.fps == 1.0


def test_misspelt_key_is_named_with_its_line():
    with pytest.raises(ConfigError) as error:
        parse_config("device:\n  room: '101'\ndetector:\n  scale_factr: 1.2\n", source="agent.yaml")
    assert str(error.value) == "agent.yaml line 4: unknown key detector.scale_factr"


def test_wrong_type_and_range_are_named():
    with pytest.raises(ConfigError) as error:
        parse_config("camera:\n  fps: 0\n  width: wide\n", source="a.yaml")
    message = str(error.value)
    assert "a.yaml line 2: camera.fps: Input should be greater than 0" in message
    assert "a.yaml line 3: camera.width" in message and "'wide'" in message


def test_window_must_divide_a_day():
    with pytest.raises(ConfigError, match="window.length_s.*divide a day"):
        parse_config("window:\n  length_s: 7\n")
    assert parse_config("window:\n  length_s: 5\n").window.length_s == 5


def test_duplicate_key_is_refused():
    with pytest.raises(ConfigError, match="line 3: mqtt.port is given twice"):
        parse_config("mqtt:\n  port: 1883\n  port: 8883\n")


def test_invalid_yaml_names_the_line():
    with pytest.raises(ConfigError, match=r"c.yaml line 2: not valid YAML"):
        parse_config("device:\n  room: a: b\n", source="c.yaml")


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config("- device\n")


def test_topic_levels_cannot_hold_wildcards():
    with pytest.raises(ConfigError, match="device.room"):
        parse_config("device:\n  room: '1/#'\n")


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "m.tflite"
    model.write_bytes(b"x")
    (tmp_path / "secret").write_text("hunter2\n")
    (tmp_path / "lesson.mp4").write_bytes(b"x")
    config_file = tmp_path / "agent.yaml"
    config_file.write_text("classifier:\n  model: models/m.tflite\nmqtt:\n  password_file: secret\n"
                           "camera:\n  source: lesson.mp4\n")
    config = load_config(config_file)
    assert config.classifier.model == model
    assert config.mqtt.password() == "hunter2"
    assert config.camera.source == str(tmp_path / "lesson.mp4")


def test_missing_model_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"line 2: classifier.model: .*nope.tflite does not exist"):
        parse_config("classifier:\n  model: nope.tflite\n", base=tmp_path)


def test_password_env_must_be_set(monkeypatch):
    config = parse_config("mqtt:\n  password_env: TEST_EDGE_PASSWORD\n")
    monkeypatch.delenv("TEST_EDGE_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="TEST_EDGE_PASSWORD, which is not set"):
        config.mqtt.password()
    monkeypatch.setenv("TEST_EDGE_PASSWORD", "s3cret")
    assert config.mqtt.password() == "s3cret"


def test_password_sources_and_tls_pairs_are_checked():
    with pytest.raises(ConfigError, match="password_file or password_env, not both"):
        parse_config("mqtt:\n  password_file: /etc/hostname\n  password_env: X\n")
    with pytest.raises(ConfigError, match="cert and key go together"):
        parse_config("mqtt:\n  tls:\n    cert: /etc/hostname\n")


def test_outbox_defaults_to_the_service_state_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    assert parse_config("").outbox.resolved_path() == tmp_path / "outbox.sqlite3"


def test_missing_config_file_exits_2_with_its_name(tmp_path):
    result = run_cli("analyze", "--config", tmp_path / "absent.yaml", tmp_path)
    assert result.returncode == 2
    assert f"config file {tmp_path / 'absent.yaml'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_typo_exits_2_before_any_work(tmp_path):
    bad = tmp_path / "agent.yaml"
    bad.write_text("window:\n  lenght_s: 60\n")
    result = run_cli("analyze", "--config", bad, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"{bad} line 2: unknown key window.lenght_s")
