"""`edge-agent model curve`: the model card's training curve, drawn from a run's own records."""

import json

import pytest

from support import run_cli

pytest.importorskip("matplotlib", reason="the [model] extra (matplotlib) is not installed")


def epoch(number, cpu, precision, train, public):
    return {"epoch": number, "train_accuracy": train, "publictest_accuracy": public, "cpu": cpu,
            "precision": precision}


HISTORY = [epoch(1, "AMD EPYC", "bfloat16", 0.3, 0.25), epoch(2, "AMD EPYC", "bfloat16", 0.45, 0.4),
           epoch(3, "Intel Xeon", "bfloat16", 0.5, 0.47), epoch(4, "Intel Xeon", "float32", 0.55, 0.5)]


def test_a_state_directory_and_a_train_record_draw_the_same_epochs(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in HISTORY))
    (tmp_path / "model.train.json").write_text(json.dumps({"history": HISTORY}))
    for source in (state, tmp_path / "model.train.json"):
        done = run_cli("model", "curve", source, "--out", tmp_path / "curve.png")
        assert done.returncode == 0, done.stderr
        assert "(4 epochs)" in done.stdout
        assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_machine_and_precision_a_run_continued_on_is_marked_where_it_began():
    from edge_agent.tools.training_curve import runs

    assert runs(HISTORY) == [(1, "AMD EPYC, bfloat16"), (3, "Intel Xeon, bfloat16"), (4, "Intel Xeon, float32")]


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty", "holds no epochs yet"),
    ("not a record", "holds no training history"),
])
def test_a_source_with_no_history_is_named_in_one_line(tmp_path, case, message):
    source = {"missing": tmp_path / "absent", "empty": tmp_path / "empty", "not a record": tmp_path / "x.json"}[case]
    if case == "empty":
        source.mkdir()
        (source / "history.jsonl").write_text("")
    elif case == "not a record":
        source.write_text("[1, 2]")
    done = run_cli("model", "curve", source, "--out", tmp_path / "curve.png")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr and str(source.name) in done.stderr
    assert not (tmp_path / "curve.png").exists()
