"""Every command, option and config key the README quotes exists (the README cannot drift from the product)."""

import argparse
import re

import pytest

from edge_agent.agent.cli import build_parser as agent_parser
from edge_agent.agent.config import AgentConfig
from edge_agent.collector.cli import build_parser as collector_parser
from edge_agent.collector.config import CollectorConfig
from edge_agent.tools.cli import build_parser as tools_parser
from support import REPO

README = (REPO / "README.md").read_text()
PARSERS = {"edge-agent": agent_parser(), "edge-collector": collector_parser()}
# `edge-agent` only lists its developer tools' verbs; their own parser takes the rest of the line.
TOOLS = tools_parser()
COMMAND = re.compile(r"(?:^|[\s`/])(edge-agent|edge-collector)((?: +[^\s`|#;&]+)*)", re.MULTILINE)
KEY = re.compile(r"`([a-z_]+(?:\.[a-z_0-9]+)+)(?::[^`]*)?`")


def quoted_commands():
    found = set()
    for program, rest in COMMAND.findall(README):
        words = tuple(word for word in rest.split() if word != "\\")
        # `sudo -u edge-agent /opt/.../edge-agent check`: a user name, the command follows.
        if not (words and "/" in words[0]):
            found.add((program, words))
    return sorted(found)


def subparser(parser, name):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def resolve(program, words):
    """The innermost (sub)parser the words name, and the words left for it."""
    parser = PARSERS[program]
    if program == "edge-agent" and words and subparser(TOOLS, words[0]) is not None:
        parser = TOOLS
    while words and (child := subparser(parser, words[0])) is not None:
        parser, words = child, words[1:]
    return parser, words


@pytest.mark.parametrize("program, words", quoted_commands(), ids=lambda value: " ".join(value)
                         if isinstance(value, tuple) else value)
def test_quoted_command_exists(program, words):
    parser, rest = resolve(program, list(words))
    assert parser is not PARSERS[program] or not words or words[0].startswith("-"), \
        f"{program} has no command {words[0]!r}"
    options = {option for action in parser._actions for option in action.option_strings}
    for word in rest:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"`{program} {' '.join(words)}`: no option {word}"


def test_the_readme_quotes_the_main_commands():
    quoted = {(program, words[0]) for program, words in quoted_commands() if words}
    for command in ("demo", "run", "check", "analyze", "evaluate", "bench"):
        assert ("edge-agent", command) in quoted
    for command in ("run", "check", "report", "serve", "dashboard", "bench"):
        assert ("edge-collector", command) in quoted


def config_field(path):
    for model in (AgentConfig, CollectorConfig):
        fields = model.model_fields
        for part in path:
            field = fields.get(part)
            if field is None:
                break
            annotation = field.annotation
            fields = getattr(annotation, "model_fields", None) or next(
                (arg.model_fields for arg in getattr(annotation, "__args__", ()) if hasattr(arg, "model_fields")),
                {})
        else:
            return True
    return False


SECTIONS = set(AgentConfig.model_fields) | set(CollectorConfig.model_fields)


@pytest.mark.parametrize("key", sorted({key for key in KEY.findall(README) if key.split(".")[0] in SECTIONS}))
def test_quoted_config_key_exists(key):
    assert config_field(key.split(".")), f"README quotes {key}, which no config has"
