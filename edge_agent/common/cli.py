"""What both command lines share: argument types and running a subcommand.

A user's mistake (an ``EdgeAgentError``) ends a command with one line on stderr that names the
program, and the error's exit status; nothing else is caught, so a bug still shows its traceback.
"""

import argparse
import datetime as dt
import sys

from .errors import EdgeAgentError


def positive_int(text: str) -> int:
    """An argument that must be a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """An argument that must be a number of at least 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def utc_time_arg(text: str) -> float:
    """An ISO 8601 time as epoch seconds; without an offset it is UTC."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time such as 2026-11-23T10:15:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def run_handler(args: argparse.Namespace, prog: str) -> int:
    """Run the chosen subcommand; a user's mistake is one line on stderr and its exit status."""
    try:
        status = args.handler(args)
    except EdgeAgentError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    return status or 0
