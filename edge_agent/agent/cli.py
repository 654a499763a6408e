"""The ``edge-agent`` command line.

The agent's own commands (``run``, ``check``, ``analyze``) are parsed here, and each imports what
it needs when it runs, so ``run --help`` and ``check`` load no more than the agent itself. The
developer tools' verbs (``model``, ``evaluate``, ``explain``, ``demo``, ``bench``) are only listed
here: ``main`` hands a command line that starts with one, whole, to ``edge_agent.tools.cli``, the
one place the agent imports the tools, so a Pi never loads them for its own work.
"""

import argparse
import json
import sys
from pathlib import Path

from .. import __version__
from ..common.cli import non_negative_float, run_handler, utc_time_arg
from ..common.errors import EdgeAgentError

# The developer tools' verbs and the line `edge-agent --help` gives each; edge_agent.tools.cli parses them.
TOOL_COMMANDS = {
    "model": "build the int8 emotion model",
    "evaluate": "accuracy, recall, confusion and speed of a model on a labelled face set",
    "explain": "what the emotion model looks at: guided backpropagation and Grad-CAM maps, as a PNG sheet",
    "demo": "the whole product on this machine: broker, two agents on sample media, collector, dashboard",
    "bench": "speed benchmarks that print figures",
}


def _labels(text):
    from ..common.contract import EMOTIONS

    labels = tuple(label.strip() for label in text.split(",") if label.strip())
    unknown = [label for label in labels if label not in EMOTIONS]
    if unknown or not labels:
        raise argparse.ArgumentTypeError(
            f"unknown emotion {', '.join(unknown) or '(none given)'}; choose from {', '.join(EMOTIONS)}")
    return labels


def cmd_analyze(args):
    from .analyze import Analysis, collect_sources, format_header, format_summary, format_window
    from .config import load_config
    from .pipeline import FramePipeline

    def warn(message):
        print(f"edge-agent: warning: {message}", file=sys.stderr)

    config = load_config(args.config)
    sources = collect_sources(args.paths, warn)
    # Recorded lessons come from any camera: the search learns each in memory, never the agent's state file.
    pipeline = FramePipeline.from_config(config, keep_state=False)
    sample_fps = config.camera.fps if args.sample_fps is None else args.sample_fps
    json_out = args.json or args.per_frame
    # With JSON lines on stdout, the readable lines go to stderr so both can be used at once.
    human = sys.stderr if json_out else sys.stdout
    if not json_out:
        print(format_header(), file=human)

    def on_window(payload):
        if args.json:
            print(payload.to_json().decode(), flush=True)
        elif not json_out:
            print(format_window(payload, args.interested), flush=True)

    def on_frame(source, number, t, result):
        faces = [{"box": list(face.box), "label": face.label, "p": round(face.p, 4)} for face in result.faces]
        print(json.dumps({"source": source, "frame": number, "t": round(t, 3), "faces": faces}), flush=True)

    analysis = Analysis(pipeline, config, warn, progress=True)
    summary = analysis.run(sources, sample_fps, start=args.start, on_window=on_window,
                           on_frame=on_frame if args.per_frame else None)
    print(format_summary(summary, args.interested), file=human)
    if args.chart:
        from .charts import session_chart

        try:
            session_chart(summary.windows, args.chart, args.interested,
                          title=f"{config.device.site} / {config.device.room}: {len(summary.windows)} window(s)")
        except OSError as exc:
            raise EdgeAgentError(f"cannot write chart {args.chart}: {exc.strerror or exc}") from None
        print(f"chart: {args.chart}", file=human)


def cmd_run(args):
    from .daemon import run

    return run(args.config)


def cmd_check(args):
    from .check import check

    return check(args.config, sys.stdout, snapshot=args.snapshot)



def build_parser() -> argparse.ArgumentParser:
    """The agent's parser; a tool's verb is listed with its help line and takes anything after it."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Classroom emotion sensing on the edge: anonymised per-minute emotion counts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def tool(name):
        # Without its own -h, everything after the verb is left for the tools' parser.
        commands.add_parser(name, help=TOOL_COMMANDS[name], add_help=False)

    # The order is the one --help has always listed.
    tool("model")
    tool("evaluate")

    analyze = commands.add_parser(
        "analyze", help="run the pipeline over recorded lessons (videos, images, folders of images)",
        description="Run the agent's pipeline (faces, emotions, per-minute windows) over video files, "
                    "image files and folders of images, offline. Windows are timed by the video's own "
                    "timestamps. Prints a table of windows and a session summary.",
        epilog="Privacy: --per-frame prints where each face is (its box). It is meant for analysing "
               "your own recordings; the running agent never writes or sends boxes, crops or frames.")
    analyze.add_argument("paths", nargs="+", metavar="PATH", help="video file, image file or folder of images")
    analyze.add_argument("--config", type=Path, help="agent config YAML (default: built-in defaults)")
    analyze.add_argument("--sample-fps", type=non_negative_float,
                         help="frames analysed per second of video (default: the config's camera.fps; 0: every frame)")
    analyze.add_argument("--start", type=utc_time_arg,
                         help="when the video started (ISO 8601, UTC unless an offset is given); "
                              "default: the file's modification time minus its duration")
    analyze.add_argument("--json", action="store_true", help="print one contract payload (JSON) per window")
    analyze.add_argument("--per-frame", action="store_true",
                         help="print one JSON line per frame or image with each face's box, label and "
                              "probability (for your own recordings only)")
    analyze.add_argument("--chart", type=Path, metavar="FILE.png",
                         help="draw the session's interest pie and emotion shares over time")
    analyze.add_argument("--interested", type=_labels, default=("happy", "surprise", "neutral"),
                         help="emotions counted as interested (default: happy,surprise,neutral)")
    analyze.set_defaults(handler=cmd_analyze)

    run = commands.add_parser(
        "run", help="run the agent: camera to per-minute windows to MQTT (what the service runs)",
        description="Run the agent until SIGTERM: frames from the camera, faces and emotions, a window "
                    "closed every minute into the outbox and published over MQTT. SIGHUP re-reads the config. "
                    "Only window payloads leave the process: no frame, crop or box is stored or sent.")
    run.add_argument("--config", type=Path, required=True, help="agent config YAML")
    run.set_defaults(handler=cmd_run)
    check = commands.add_parser(
        "check", help="check the config, model, camera, outbox and broker, and print a verdict for each",
        description="What to run after setting a camera up: validates the config, loads the model, reads "
                    "one frame from the camera, opens the outbox and connects to the broker. Exit status 0 "
                    "when all is well, 1 when something is not.")
    check.add_argument("--config", type=Path, required=True, help="agent config YAML")
    check.add_argument("--snapshot", type=Path, metavar="FILE.jpg",
                       help="also write the frame read from the camera, each face found boxed and labelled, "
                            "to this file (.jpg or .png, mode 0600): to see what the camera finds when "
                            "mounting it. Only written when asked; the running agent never writes one")
    check.set_defaults(handler=cmd_check)

    tool("explain")
    tool("demo")
    tool("bench")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``edge-agent`` command line; its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if parser.parse_known_args(argv)[0].command in TOOL_COMMANDS:
        from ..tools.cli import main as tools_main

        return tools_main(argv)
    return run_handler(parser.parse_args(argv), "edge-agent")


if __name__ == "__main__":
    sys.exit(main())
