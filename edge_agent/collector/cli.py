"""The ``edge-collector`` command line.

Each command imports what it needs when it runs, so ``--help`` and ``check`` stay quick; the
benchmark is a developer tool, imported only for ``edge-collector bench``.
"""

import argparse
import sys
from pathlib import Path

from ..common.check import print_verdicts, run_checks
from ..common.cli import run_handler, utc_time_arg
from .config import load_collector_config

DEFAULT_CONFIG = Path("/etc/edge-collector/collector.yaml")


def _config(args):
    """The given config; without one, the installed one if there is one, else every default."""
    if args.config is None and DEFAULT_CONFIG.is_file():
        args.config = DEFAULT_CONFIG
    return load_collector_config(args.config)


def _open_store(config, url=None):
    from .store import Store

    return Store.from_config(config.store, url)


def cmd_run(args):
    from .daemon import run

    return run(args.config)


def cmd_check(args):
    from ..common.mqtt import probe_broker
    from .dashboard import Dashboard

    def load():
        config = _config(args)
        return config, f"{args.config or 'built-in defaults'}: client id {config.mqtt.client_id}"

    def store(config):
        opened = _open_store(config)
        try:
            return f"{opened.url}: {opened.count_windows()} windows, {len(opened.rooms())} rooms"
        finally:
            opened.close()

    def output(config):
        dashboard = Dashboard.from_config(config)
        dashboard.check_writable()
        return f"{dashboard.output_dir} is writable"

    def broker(config):
        from .ingest import SESSION_EXPIRY_S

        return probe_broker(config.mqtt, client_id=f"{config.mqtt.client_id}-check",
                            session_expiry_s=SESSION_EXPIRY_S)

    parts = (("store", store), ("output", output), ("broker", broker))
    return print_verdicts(run_checks(load, parts), sys.stdout)


def cmd_dashboard(args):
    from .dashboard import Dashboard

    config = _config(args)
    dashboard = Dashboard.from_config(config)
    if args.out:
        dashboard.output_dir = args.out
    dashboard.check_writable()
    if args.watch:
        from .daemon import watch_dashboard

        return watch_dashboard(config, dashboard, args.store)
    store = _open_store(config, args.store)
    try:
        result = dashboard.build(store)
    finally:
        store.close()
    print(f"{dashboard.output_dir / 'index.html'}: {result.rooms} rooms, {result.lessons} lessons, "
          f"{result.pages} pages and {result.charts_drawn} charts written in {result.seconds:.1f} s")


def cmd_report(args):
    from .report import find_room, report_session, write_report

    config = _config(args)
    store = _open_store(config, args.store)
    try:
        site, room = find_room(store, args.room)
        session = report_session(store, site, room, start=args.start, end=args.end,
                                 gap_s=config.sessions.gap_min * 60)
    finally:
        store.close()
    write_report(session, args.out, config.sessions.interested, config.dashboard.resolved_timezone())
    interest = session.interest(config.sessions.interested)
    print(f"wrote {args.out}: {site}/{room}, {len(session.minutes)} minutes, interest "
          f"{'no data' if interest is None else f'{interest:.0%}'}")


def cmd_serve(args):
    from .web import serve_directory

    serve_directory(args.dir or _config(args).dashboard.resolved_output_dir(), args.bind, args.port,
                    without_login=args.without_login)


def cmd_alert_rules(args):
    from .alerts import render_rules

    text = render_rules()
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="edge-collector",
        description="The classroom emotion collector: MQTT windows into a store, charts and a dashboard.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = f"collector config YAML (default: {DEFAULT_CONFIG} if present, else built-in defaults)"

    run = commands.add_parser(
        "run", help="subscribe to every device, store windows, regenerate the dashboard (what the service runs)",
        description="Run until SIGTERM: every device's windows, status and stats from MQTT (a persistent "
                    "QoS 1 session, so windows sent while the collector was away arrive when it is back), "
                    "validated and stored once each; the dashboard rewritten every dashboard.refresh_s.")
    run.add_argument("--config", type=Path, required=True, help="collector config YAML")
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser(
        "check", help="check the config, store, output directory and broker, a verdict for each",
        description="Exit status 0 when every part is fine, 1 when one is not.")
    check.add_argument("--config", type=Path, help=config_help)
    check.set_defaults(handler=cmd_check)

    dashboard = commands.add_parser(
        "dashboard", help="write the dashboard from the store, once or every refresh",
        description="Bring the HTML pages and charts up to date with the store, drawing only what changed "
                    "(what `run`'s worker does every dashboard.refresh_s). With --watch, every refresh until "
                    "SIGTERM: the service to run beside `edge-collector run` when dashboard.worker is false.")
    dashboard.add_argument("--config", type=Path, help=config_help)
    dashboard.add_argument("--store", metavar="URL", help="database URL (default: the config's)")
    dashboard.add_argument("--out", type=Path, help="output directory (default: the config's)")
    dashboard.add_argument("--watch", action="store_true", help="keep refreshing until SIGTERM or Ctrl-C")
    dashboard.set_defaults(handler=cmd_dashboard)

    report = commands.add_parser(
        "report", help="one room's after-class report as PNG or PDF",
        description="Interest per minute, emotion shares, the interested/not interested pie and the "
                    "session's figures on one page. Without --from/--to: the room's latest session.")
    report.add_argument("--room", required=True, help="ROOM, or SITE/ROOM when the name is used in several sites")
    report.add_argument("--from", dest="start", type=utc_time_arg, metavar="TIME",
                        help="period start, ISO 8601 (UTC unless an offset is given)")
    report.add_argument("--to", dest="end", type=utc_time_arg, metavar="TIME", help="period end, ISO 8601")
    report.add_argument("--out", type=Path, required=True, help="FILE.png or FILE.pdf")
    report.add_argument("--config", type=Path, help=config_help)
    report.add_argument("--store", metavar="URL", help="database URL (default: the config's)")
    report.set_defaults(handler=cmd_report)

    serve = commands.add_parser(
        "serve", help="serve the dashboard directory over HTTP for a quick look",
        description="A plain local web server for the dashboard directory: no login, every room to whoever "
                    "reaches it, so it listens on loopback only. For a school network, put a real web server "
                    "with a login in front of the directory instead (the Ansible role's nginx).")
    serve.add_argument("--config", type=Path, help=config_help)
    serve.add_argument("--dir", type=Path, help="dashboard directory (default: the config's)")
    serve.add_argument("--bind", default="127.0.0.1",
                       help="address to listen on (default: %(default)s); anything but loopback needs --without-login")
    serve.add_argument("--without-login", action="store_true",
                       help="allow a non-loopback --bind, serving every room's pages with no login to anyone who "
                            "reaches the address")
    serve.add_argument("--port", type=int, default=8080, help="port (default: %(default)s; 0: any free port)")
    serve.set_defaults(handler=cmd_serve)

    alert_rules = commands.add_parser(
        "alert-rules", help="Prometheus alert rules mirroring the dashboard's \"needs attention\" verdicts",
        description="Write the rule file for Prometheus: one alert per verdict of the dashboard's device table, "
                    "on the metrics served at metrics.port and the thresholds they carry from the config.")
    alert_rules.add_argument("--out", type=Path, help="file to write (default: standard output)")
    alert_rules.set_defaults(handler=cmd_alert_rules)

    # Listed for --help; main() hands its arguments to the benchmark's own parser.
    commands.add_parser(
        "bench", help="ingest throughput: simulated devices through a real broker into SQLite and PostgreSQL; "
                      "`bench dashboard`: the dashboard of a 500-room school against the previous way")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["bench", "dashboard"]:
        from ..tools.dashboard_bench import main as dashboard_bench_main

        return dashboard_bench_main(argv[2:])
    if argv[:1] == ["bench"]:
        from ..tools.collector_bench import main as bench_main

        return bench_main(argv[1:])
    return run_handler(build_parser().parse_args(argv), "edge-collector")


if __name__ == "__main__":
    sys.exit(main())
