"""A model's read-out (inset, mirroring, log bias) travels in its build record and is applied as deployed."""

import json
import shutil

import numpy as np
import pytest

from edge_agent.agent.config import ClassifierConfig
from edge_agent.agent.emotions import EmotionClassifier, apply_log_bias
from edge_agent.common.contract import EMOTIONS
from edge_agent.common.errors import EdgeAgentError
from support import MODEL


def _with_read_out(tmp_path, **read_out):
    """The shipped model and its build record copied, with ``read_out`` put into the record."""
    model = tmp_path / MODEL.name
    shutil.copy(MODEL, model)
    record = json.loads(MODEL.with_suffix(".json").read_text())
    record["read_out"] = read_out
    model.with_suffix(".json").write_text(json.dumps(record))
    return model


@pytest.fixture(scope="module")
def crops():
    rng = np.random.default_rng(7)
    return list(rng.integers(0, 256, (24, 96, 96), dtype=np.uint8))


def test_the_inset_cuts_the_same_share_off_each_side_before_resizing(tmp_path, crops):
    inset = EmotionClassifier(_with_read_out(tmp_path, inset=2 / 48))
    plain = EmotionClassifier(MODEL)
    # 2/48 of 96 px is 4 px a side.
    np.testing.assert_array_equal(inset.probabilities(crops), plain.probabilities([c[4:92, 4:92] for c in crops]))
    assert not np.array_equal(inset.probabilities(crops), plain.probabilities(crops))


def test_the_log_bias_shifts_each_emotions_odds_and_can_turn_a_label(tmp_path, crops):
    bias = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0)
    biased = EmotionClassifier(_with_read_out(tmp_path, log_bias=bias))
    plain = EmotionClassifier(MODEL).probabilities(crops)
    shifted = biased.probabilities(crops)
    np.testing.assert_allclose(shifted, apply_log_bias(plain, bias), rtol=1e-6)
    np.testing.assert_allclose(shifted.sum(axis=1), 1.0, rtol=1e-5)
    # Neutral's odds against every other emotion grow by e^4 where neither was at the floor.
    kept = (plain[:, 6] > 0.01) & (plain[:, 0] > 0.01)
    np.testing.assert_allclose((shifted[kept, 6] / shifted[kept, 0]) / (plain[kept, 6] / plain[kept, 0]),
                               np.exp(4), rtol=1e-3)
    assert (shifted.argmax(axis=1) == 6).sum() > (plain.argmax(axis=1) == 6).sum()
    unbiased = EmotionClassifier(biased.path, unbiased=True)
    np.testing.assert_array_equal(unbiased.probabilities(crops), plain)


def test_mirroring_defaults_to_the_records_choice_and_a_config_can_override_it(tmp_path):
    model = _with_read_out(tmp_path, flip_average=True)
    assert EmotionClassifier(model).flip_average is True
    assert EmotionClassifier(model, flip_average=False).flip_average is False
    assert EmotionClassifier(MODEL).flip_average is False
    assert ClassifierConfig(model=model).flip_average is None


def test_a_record_of_another_model_file_is_refused(tmp_path):
    model = _with_read_out(tmp_path, inset=0.04)
    record = json.loads(model.with_suffix(".json").read_text())
    record["sha256"] = "0" * 64
    model.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(EdgeAgentError, match=r"build record .*\.json describes another model file.*rebuild"):
        EmotionClassifier(model)


@pytest.mark.parametrize("read_out, problem", [
    ({"inset": 0.3}, "inset in"),
    ({"flip_average": "yes"}, "flip_average true or false"),
    ({"log_bias": [0.5] * 6}, f"log_bias of {len(EMOTIONS)} numbers"),
    ({"log_bias": ["x"] * 7}, "read_out is malformed"),
])
def test_a_malformed_read_out_names_the_record_and_the_rule(tmp_path, read_out, problem):
    model = _with_read_out(tmp_path, **read_out)
    with pytest.raises(EdgeAgentError, match=str(model.with_suffix(".json"))) as raised:
        EmotionClassifier(model)
    assert problem in str(raised.value)


def test_an_unreadable_record_names_itself(tmp_path):
    model = _with_read_out(tmp_path)
    model.with_suffix(".json").write_text("{not json")
    with pytest.raises(EdgeAgentError, match=r"build record .* cannot be read"):
        EmotionClassifier(model)
