"""A verdict per part, for ``edge-agent check`` and ``edge-collector check``: what IT runs after setup.

The config comes first: without it nothing else can be checked. Every other part is checked even
when an earlier one failed, so one run lists every problem. A part fails by raising an
EdgeAgentError, whose message is the verdict's detail; anything else is a bug and not caught.
"""

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from .config import ConfigError
from .errors import EdgeAgentError

Verdict = tuple[str, bool, str]


def run_checks(load: Callable[[], tuple[Any, str]],
               parts: Iterable[tuple[str, Callable[[Any], str]]]) -> Iterator[Verdict]:
    """Yield ``(part, ok, detail)``: "config" from ``load()`` (the config and a line about it), then
    each named part's check of that config."""
    try:
        config, detail = load()
    except ConfigError as exc:
        yield "config", False, str(exc)
        return
    yield "config", True, detail
    for part, check in parts:
        try:
            yield part, True, check(config)
        except EdgeAgentError as exc:
            yield part, False, str(exc)


def print_verdicts(results: Iterable[Verdict], out: TextIO) -> int:
    """Print each ``(part, ok, detail)`` as it comes; 0 when every part is fine, 1 otherwise."""
    failed = 0
    for part, ok, detail in results:
        failed += not ok
        print(f"{part:<7} {'ok' if ok else 'FAIL':<5} {detail}", file=out, flush=True)
    print("all good" if not failed else f"{failed} problem(s) found", file=out)
    return 1 if failed else 0
