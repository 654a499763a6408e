"""`edge-agent` hands its developer tools' verbs to their own parser, and a user cannot tell.

The agent's parser only lists the tools' verbs; edge_agent.tools.cli parses what follows them.
Help and errors read as one command line's, and the agent's own commands never load the tools.
"""

import argparse
import subprocess
import sys

import pytest

from edge_agent.agent.cli import TOOL_COMMANDS
from edge_agent.agent.cli import build_parser as agent_parser
from edge_agent.tools.cli import build_parser as tools_parser
from support import REPO, run_cli


def verbs(parser):
    return next(action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction))


def test_the_agent_lists_every_tool_verb_the_tools_parse():
    assert set(verbs(tools_parser())) == set(TOOL_COMMANDS)
    assert set(verbs(agent_parser())) == set(TOOL_COMMANDS) | {"analyze", "run", "check"}


def test_the_agents_help_lists_each_tool_with_its_line():
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    # argparse wraps the lines, so words are compared, not line breaks.
    words = " ".join(done.stdout.split())
    for verb, line in TOOL_COMMANDS.items():
        assert f"{verb} {line}" in words


@pytest.mark.parametrize("command, options", [
    (["model", "build"], ["--weights", "--calibration", "--samples", "--candidates", "--out"]),
    (["bench", "model"], ["--model", "--reference", "--data", "--threads", "--json"]),
    (["evaluate"], ["--model", "--data", "--flip-average"]),
])
def test_a_tools_help_comes_through_the_agent(command, options):
    done = run_cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: edge-agent {' '.join(command)} [-h]")
    for option in options:
        assert option in done.stdout


def test_a_tools_missing_argument_is_its_usage_and_one_error_line():
    done = run_cli("evaluate")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: edge-agent evaluate [-h]")
    assert done.stderr.splitlines()[-1] == "edge-agent evaluate: error: the following arguments are required: --data"


def test_an_unknown_option_after_a_tool_is_reported_as_by_the_agent():
    tool, agent = run_cli("model", "fetch", "--bogus"), run_cli("run", "--config", "x.yaml", "--bogus")
    assert tool.returncode == agent.returncode == 2
    assert tool.stderr == agent.stderr == (
        "usage: edge-agent [-h] [--version] COMMAND ...\nedge-agent: error: unrecognized arguments: --bogus\n")


def test_the_agents_own_commands_do_not_load_the_tools():
    code = ("import contextlib, io, sys\n"
            "from edge_agent.agent.cli import main\n"
            "for argv in (['--help'], ['run', '--help'], ['check', '--help'], ['analyze', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        main(argv)\n"
            "print(sorted(name for name in sys.modules if name.startswith('edge_agent.tools')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"
