"""`edge-agent model train`: a smoke run that builds, resuming after a kill, and every bad input.

Runs on made-up faces (the network need not learn anything), so it needs TensorFlow but not
../shared.
"""

import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from support import REPO, run_cli

pytest.importorskip("tensorflow", reason="the [model] extra (TensorFlow) is not installed")

SMALL = ["--width", "0.25", "--batch-size", "32", "--threads", "1"]
VOTE_COLUMNS = np.array(["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                         "contempt", "unknown", "NF"])


def faces(path, count, side=48, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, images=rng.integers(0, 256, (count, side, side), dtype=np.uint8),
             labels=np.arange(count, dtype=np.uint8) % 7)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    votes = np.random.default_rng(1).integers(0, 4, (320, 10)).astype(np.int16)
    votes[:5] = -1
    np.savez(root / "votes.npz", training_votes=votes, publictest_votes=votes[:64], columns=VOTE_COLUMNS)
    return {"training": faces(root / "train.npz", 320), "validation": faces(root / "val.npz", 64, seed=2),
            "votes": root / "votes.npz"}


def train_args(data, state, out, *extra):
    return ["model", "train", "--data", data["training"], "--validation", data["validation"],
            "--votes", data["votes"], "--state", state, "--out", out, *SMALL, *extra]


def weights_of(path):
    from edge_agent.tools.keras_model import load_keras_model

    return load_keras_model(path).get_weights()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One uninterrupted two-epoch run."""
    root = tmp_path_factory.mktemp("trained")
    done = run_cli(*train_args(data, root / "state", root / "model.h5", "--epochs", "2"))
    assert done.returncode == 0, done.stderr
    return root


def test_a_smoke_run_writes_a_model_that_builds_to_a_loadable_int8_model(trained, data):
    from edge_agent.agent.emotions import EmotionClassifier

    record = json.loads((trained / "model.train.json").read_text())
    assert record["finished"] and record["epochs_done"] == 2
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert record["training"]["ferplus_votes"] == "votes.npz"
    assert record["wall_time_s"] > 0
    done = run_cli("model", "build", "--weights", trained / "model.h5", "--calibration", data["training"],
                   "--samples", 35, "--candidates", 1, "--out", trained / "model.tflite")
    assert done.returncode == 0, done.stderr
    classifier = EmotionClassifier(trained / "model.tflite")
    assert classifier.quantized and (classifier.input_height, classifier.input_width) == (44, 44)
    assert classifier.probabilities(np.zeros((3, 48, 48), np.uint8)).shape == (3, 7)
    build_record = json.loads((trained / "model.json").read_text())
    assert build_record["training"]["recipe_digest"] == record["recipe_digest"]
    # Trained on the centred 44 px of 48 px faces: a face is read with 2/48 cut off each side.
    assert build_record["read_out"] == {"inset": pytest.approx(2 / 48)}
    assert classifier.read_out.inset == pytest.approx(2 / 48)


def test_a_run_killed_mid_epoch_resumes_from_its_checkpoint_and_ends_where_an_unbroken_run_ends(
        trained, data, tmp_path):
    state, out = tmp_path / "state", tmp_path / "model.h5"
    command = [sys.executable, "-m", "edge_agent.agent.cli",
               *map(str, train_args(data, state, out, "--epochs", "2"))]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (state / "state.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    # Killed right after the first checkpoint: inside the second epoch, before it is saved.
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((state / "state.json").read_text())["epoch"] == 1

    done = run_cli(*train_args(data, state, out, "--epochs", "2"))
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr and "after epoch 1/2" in done.stderr
    assert "epoch 1/2:" not in done.stderr
    record = json.loads(out.with_suffix(".train.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    # The same arithmetic as the uninterrupted run: data order, augmentation and dropout are keyed to the step.
    assert all(np.array_equal(a, b) for a, b in zip(weights_of(out), weights_of(trained / "model.h5"), strict=True))


def test_a_time_budget_stops_after_an_epoch_and_the_same_command_goes_on(data, tmp_path):
    args = train_args(data, tmp_path / "state", tmp_path / "model.h5", "--epochs", "3", "--time-budget", "0.001")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "time budget reached after epoch 1/3" in first.stderr
    assert not (tmp_path / "model.h5").exists()
    second = run_cli(*train_args(data, tmp_path / "state", tmp_path / "model.h5", "--epochs", "3"))
    assert second.returncode == 0, second.stderr
    assert "after epoch 1/3" in second.stderr and (tmp_path / "model.h5").is_file()


def test_a_checkpoint_of_another_recipe_is_refused_and_kept(trained, data):
    before = (trained / "state" / "state.json").read_bytes()
    done = run_cli(*train_args(data, trained / "state", trained / "other.h5", "--epochs", "2", "--seed", "7"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "another recipe" in done.stderr and "seed" in done.stderr
    assert (trained / "state" / "state.json").read_bytes() == before
    assert not (trained / "other.h5").exists()


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("truncated", "not a readable npz file"),
    ("wrong shape", "training expects FER-2013's 48x48"),
    ("votes misaligned", "must line up with the 320 training faces"),
    ("state unwritable", "is not writable"),
])
def test_bad_input_stops_with_one_line_naming_the_file(data, tmp_path, case, message):
    args = dict(data)
    state = tmp_path / "state"
    if case == "missing":
        args["training"] = tmp_path / "absent.npz"
    elif case == "truncated":
        args["training"] = tmp_path / "cut.npz"
        args["training"].write_bytes(data["training"].read_bytes()[:500])
    elif case == "wrong shape":
        args["training"] = faces(tmp_path / "big.npz", 40, side=64)
    elif case == "votes misaligned":
        args["votes"] = tmp_path / "short.npz"
        np.savez(args["votes"], training_votes=np.zeros((300, 10), np.int16), columns=VOTE_COLUMNS)
    elif case == "state unwritable":
        (tmp_path / "file").write_text("")
        state = tmp_path / "file" / "state"
    out = tmp_path / "model.h5"
    done = run_cli(*train_args(args, state, out, "--epochs", "1"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr
    named = {"votes misaligned": args["votes"], "state unwritable": state}.get(case, args["training"])
    assert str(named) in done.stderr
    assert not out.exists()


def test_training_refuses_to_write_over_the_shipped_model(data, tmp_path):
    from support import SHIPPED

    before = SHIPPED.read_bytes()
    done = run_cli(*train_args(data, tmp_path / "state", SHIPPED, "--epochs", "1"))
    assert done.returncode == 2
    assert "Keras .h5" in done.stderr and str(SHIPPED) in done.stderr
    assert SHIPPED.read_bytes() == before


def test_an_unknown_recipe_is_named_before_anything_is_written(data, tmp_path):
    done = run_cli(*train_args(data, tmp_path / "state", tmp_path / "model.h5", "--recipe", "fer-vgg9"))
    assert done.returncode == 2
    assert "'fer-vgg9' is not one of fer-vgg5, fer-gap9" in done.stderr
    assert not (tmp_path / "state").exists()


def test_the_smoke_run_leaves_the_repository_layout_and_says_how_it_computed(trained):
    state = trained / "state"
    names = sorted(path.name for path in state.iterdir())
    # One checkpoint (the last epoch's), the recipe it belongs to, its epoch and the records.
    assert names == ["epoch-002.data-00000-of-00001", "epoch-002.index", "history.jsonl", "recipe.json",
                     "state.json"], names
    assert json.loads((state / "state.json").read_text())["checkpoint"] == "epoch-002"
    from edge_agent.tools.train import choose_precision, cpu_flags

    expected = choose_precision("auto", cpu_flags())
    history = [json.loads(line) for line in (state / "history.jsonl").read_text().splitlines()]
    assert {h["precision"] for h in history} == {expected}
    assert all(h["cpu"] and h["faces_per_s"] > 0 for h in history)
    assert json.loads((trained / "model.train.json").read_text())["precision"] == [expected]


def test_a_checkpoint_goes_on_in_another_precision_and_each_epoch_says_which(data, tmp_path):
    from edge_agent.tools.train import cpu_flags

    if not cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        pytest.skip("this CPU has no bfloat16 arithmetic (avx512_bf16 or AMX)")
    args = train_args(data, tmp_path / "state", tmp_path / "model.h5", "--epochs", "2")
    first = run_cli(*args, "--precision", "float32", "--time-budget", "0.001")
    assert first.returncode == 0, first.stderr
    second = run_cli(*args, "--precision", "bfloat16")
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr and "training in bfloat16" in second.stderr
    record = json.loads((tmp_path / "model.train.json").read_text())
    assert [h["precision"] for h in record["history"]] == ["float32", "bfloat16"]
    # The written model is float32 whatever the steps computed in: it converts to int8 as before.
    model = json.loads(__import__("h5py").File(tmp_path / "model.h5")["/"].attrs["model_config"])
    assert {layer["config"].get("dtype") for layer in model["config"]["layers"]} <= {"float32", None}


def test_a_damaged_checkpoint_is_refused_and_left_as_it_was(trained, data, tmp_path):
    import shutil

    state = tmp_path / "state"
    shutil.copytree(trained / "state", state)
    weights = state / "epoch-002.data-00000-of-00001"
    weights.write_bytes(weights.read_bytes()[:100])
    before = {path.name: path.read_bytes() for path in state.iterdir()}
    done = run_cli(*train_args(data, state, tmp_path / "model.h5", "--epochs", "2"))
    assert done.returncode == 2
    # TensorFlow, imported by then, logs its start-up; ours is the one error line, and the last.
    errors = [line for line in done.stderr.splitlines() if line.startswith("edge-agent:")]
    assert errors == done.stderr.splitlines()[-1:], done.stderr
    assert str(state / "epoch-002") in errors[0] and "cannot be read" in errors[0]
    assert {path.name: path.read_bytes() for path in state.iterdir()} == before
    assert not (tmp_path / "model.h5").exists()


def test_onednn_is_kept_off_amx_and_bfloat16_is_chosen_only_where_the_cpu_has_it():
    from edge_agent.tools.train import choose_precision, guard_onednn

    environ = {}
    assert guard_onednn({"avx512f", "amx_tile", "amx_bf16"}, environ) == "AVX512_CORE_BF16"
    assert environ == {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}
    assert guard_onednn({"avx512f", "avx512_bf16"}, {}) is None
    # A cap the user set is theirs.
    assert guard_onednn({"amx_tile"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}) == "AVX2"
    assert choose_precision("auto", {"avx512_bf16"}) == "bfloat16"
    assert choose_precision("auto", {"amx_bf16"}) == "bfloat16"
    assert choose_precision("auto", {"avx2", "fma"}) == "float32"
    assert choose_precision("float32", {"avx512_bf16"}) == "float32"


def test_the_checkpoints_in_the_repository_belong_to_their_recipes_load_and_stay_small():
    """What the next training run resumes from, on whatever machine: models/training/<recipe>/."""
    from edge_agent.tools.keras_model import import_tensorflow
    from edge_agent.tools.train import RECIPES, StateDir, state_dir_for, trainable

    assert state_dir_for("fer-gap9") == REPO / "models" / "training" / "fer-gap9"
    kept = sorted((REPO / "models" / "training").glob("*/state.json"))
    if not kept:
        pytest.skip("no training checkpoint is kept in the repository (none is under way)")
    tf, tf_keras = import_tensorflow()
    for state_file in kept:
        name = state_file.parent.name
        assert name in RECIPES, f"{state_file.parent} is no recipe's"
        store = StateDir(state_file.parent, RECIPES[name])
        current = store.current()
        assert current["epoch"] == len(store.history()) and current["epoch"] <= RECIPES[name].epochs
        assert sum(path.stat().st_size for path in state_file.parent.iterdir()) <= 10 * 2**20
        _, optimizer, checkpoint = trainable(RECIPES[name], tf, tf_keras)
        checkpoint.read(str(state_file.parent / current["checkpoint"])).assert_consumed()
        assert int(optimizer.iterations.numpy()) > 0


def test_a_recipe_started_from_another_loads_its_weights_and_keeps_saying_where_they_came_from(
        trained, data, tmp_path):
    from edge_agent.tools.keras_model import import_tensorflow
    from edge_agent.tools.train import RECIPES, load_start, trainable

    tf, tf_keras = import_tensorflow()
    recipe = dataclasses.replace(RECIPES["fer-gap9-ft"], width=0.25)
    source, _, checkpoint = trainable(dataclasses.replace(RECIPES["fer-gap9"], width=0.25), tf, tf_keras)
    checkpoint.read(str(trained / "state" / "epoch-002")).expect_partial()
    model, _, _ = trainable(recipe, tf, tf_keras)
    start = load_start(trained / "state", recipe, model, tf)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), source.get_weights(), strict=True))
    assert start["recipe"] == "fer-gap9" and start["epoch"] == 2 and len(start["weights_sha256"]) == 64

    args = train_args(data, tmp_path / "state", tmp_path / "model.h5", "--recipe", "fer-gap9-ft",
                      "--init-from", trained / "state", "--epochs", "2")
    first = run_cli(*args, "--time-budget", "0.001")
    assert first.returncode == 0, first.stderr
    assert f"starting from {trained / 'state'} (epoch 2)" in first.stderr
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    # A resumed run goes on from its own checkpoint, not from the starting weights again.
    assert "resuming" in second.stderr and "starting from" not in second.stderr
    record = json.loads((tmp_path / "model.train.json").read_text())
    assert record["started_from"] == start and record["recipe"]["init_from"] == "fer-gap9"


@pytest.mark.parametrize("source, message", [
    ("missing", "holds no readable checkpoint to start 'fer-gap9' from"),
    ("vgg5", "is of another network (differs in: architecture, crop)"),
])
def test_starting_weights_that_are_missing_or_of_another_network_are_refused_in_one_line(
        data, tmp_path, source, message):
    state = tmp_path / "source"
    if source == "vgg5":
        made = run_cli(*train_args(data, state, tmp_path / "vgg5.h5", "--recipe", "fer-vgg5", "--epochs", "1",
                                   "--time-budget", "0.001"))
        assert made.returncode == 0, made.stderr
    done = run_cli(*train_args(data, tmp_path / "state", tmp_path / "model.h5", "--recipe", "fer-gap9-ft",
                               "--init-from", state, "--epochs", "1"))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("edge-agent:")]
    assert len(errors) == 1 and message in errors[0] and str(state) in errors[0], done.stderr
    assert not (tmp_path / "state" / "state.json").exists()


def test_class_weights_move_the_labels_towards_the_weighted_emotion(data, tmp_path):
    """The same run twice, once with fear weighted up: the trained network reads fear more often."""
    from edge_agent.tools.keras_model import load_keras_model
    from edge_agent.tools.train import RECIPES, load_faces, train

    images = load_faces(data["training"])[0][:, 2:46, 2:46].astype(np.float32)[..., None] / 127.5 - 1
    fear = []
    for weights in ((), (1.0, 1.0, 8.0, 1.0, 1.0, 1.0, 1.0)):
        recipe = dataclasses.replace(RECIPES["fer-gap9"], width=0.25, batch_size=32, epochs=2,
                                     class_weights=weights)
        out = tmp_path / f"{len(weights)}.h5"
        train(data["training"], data["validation"], None, tmp_path / f"state{len(weights)}", out, recipe,
              progress=lambda line: None)
        fear.append(float((load_keras_model(out).predict(images, verbose=0).argmax(1) == 2).mean()))
    assert fear[1] > fear[0] + 0.2, fear
