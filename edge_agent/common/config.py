"""YAML configuration machinery both sides use: strict sections, the broker's keys, and errors
that name the file, line and key.

A config is validated whole at start: an unknown key, a wrong type or a missing file stops the
program with one message per problem (``agent.yaml line 4: unknown key detector.scale_factr``),
never a default used in silence. Relative paths are relative to the config file.
"""

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .contract import DEFAULT_PREFIX, Name
from .errors import EdgeAgentError


def _existing_file(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"file {path} does not exist" if not path.exists() else f"{path} is not a file")
    return path


ExistingFile = Annotated[Path, AfterValidator(_existing_file)]


class ConfigError(EdgeAgentError):
    """A configuration a person must fix; the message names the file, line and key."""


class Section(BaseModel):
    # A misspelt key would otherwise be ignored and its default used without a word.
    model_config = ConfigDict(extra="forbid", validate_default=True)


class TLSConfig(Section):
    ca: ExistingFile | None = Field(None, title="CA certificate that signed the broker's")
    cert: ExistingFile | None = Field(None, title="Client certificate (optional)")
    key: ExistingFile | None = Field(None, title="Client key (with cert)")

    @model_validator(mode="after")
    def _cert_with_key(self) -> Self:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class BrokerConfig(Section):
    """How to reach the broker: shared by the agent and the collector."""

    host: str = Field("localhost", min_length=1, title="Broker host")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(1883, title="Broker port")
    prefix: Name = Field(DEFAULT_PREFIX, title="First topic level")
    tls: TLSConfig | None = Field(None, title="TLS; absent means plain MQTT")
    username: str | None = Field(None, title="User name; the password comes from password_file or password_env")
    password_file: ExistingFile | None = Field(None, title="File holding the password (mode 0600)")
    password_env: str | None = Field(None, title="Environment variable holding the password")
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = Field(60, title="MQTT keepalive")
    reconnect_max_s: Annotated[float, Field(ge=1, le=3600)] = Field(60.0, title="Longest wait between reconnects")
    protocol: Literal["5", "3.1.1"] = Field(
        "5", title="MQTT protocol version",
        description="3.1.1 only for a broker without MQTT 5: its PUBACK cannot say a publish was refused")

    @field_validator("protocol", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        # YAML reads `protocol: 5` as a number.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_password_source(self) -> Self:
        if self.password_file and self.password_env:
            raise ValueError("give password_file or password_env, not both")
        return self

    def password(self) -> str | None:
        """The broker password, read now so a rotated file is picked up on reconnect."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"mqtt.password_env names {self.password_env}, which is not set")
            return value
        if self.password_file:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"mqtt.password_file {self.password_file}: {exc.strerror}") from None
        return None


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", title="Log level")


def default_state_dir(name: str) -> Path:
    """systemd's StateDirectory= when run as a service, else the user's state directory."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state)
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / name


BROKER_PATH_KEYS = (("mqtt", "password_file"), ("mqtt", "tls", "ca"), ("mqtt", "tls", "cert"),
                    ("mqtt", "tls", "key"))


KeyLines = dict[tuple[str, ...], int]


def _key_lines(node: yaml.Node | None, path: tuple[str, ...] = (), lines: KeyLines | None = None,
               source: str = "config") -> KeyLines:
    """Map each key path to its YAML line; refuse duplicate keys, which YAML would silently merge."""
    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{source} line {line}: {'.'.join((*path, key))} is given twice")
            seen.add(key)
            lines[(*path, key)] = line
            _key_lines(value_node, (*path, key), lines, source)
    return lines


# How a key's text value is resolved against the config file's directory.
PathRule = Callable[[str, Path], str]


def file_path(value: str, base: Path) -> str:
    """A file path, relative to ``base`` unless absolute (``~`` expanded)."""
    return str(base / Path(value).expanduser())


def resolve_path_keys(data: dict[str, Any], base: Path, path_keys: Iterable[tuple[str, ...]],
                      rule: PathRule = file_path) -> None:
    """Resolve the text values at ``path_keys`` against the config file's directory ``base``."""
    for keys in path_keys:
        section: Any = data
        for key in keys[:-1]:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict) and isinstance(section.get(keys[-1]), str):
            section[keys[-1]] = rule(section[keys[-1]], base)


def _describe(exc: ValidationError, lines: KeyLines, source: str) -> str:
    messages = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        key = ".".join(loc)
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        where = f"{source} line {line}" if line else source
        if error["type"] == "extra_forbidden":
            messages.append(f"{where}: unknown key {key}")
        else:
            value = error.get("input")
            shown = f" (got {value!r})" if isinstance(value, (str, int, float, bool)) else ""
            messages.append(f"{where}: {key}: {error['msg']}{shown}")
    return "\n".join(messages)


class ConfigFile(Section):
    """A whole config file: its sections, read from YAML and validated at once.

    ``PATH_KEYS`` are the keys that hold file paths; a relative one is taken relative to the
    config file's directory. ``SOMETIMES_PATH_KEYS`` hold a path only in some forms (a camera
    source, an SQLite URL), each with the rule that resolves it and leaves the other forms as
    they are.
    """

    PATH_KEYS: ClassVar[tuple[tuple[str, ...], ...]] = ()
    SOMETIMES_PATH_KEYS: ClassVar[tuple[tuple[tuple[str, ...], PathRule], ...]] = ()

    @classmethod
    def resolve_paths(cls, data: dict[str, Any], base: Path) -> None:
        resolve_path_keys(data, base, cls.PATH_KEYS)
        for keys, rule in cls.SOMETIMES_PATH_KEYS:
            resolve_path_keys(data, base, (keys,), rule)

    @classmethod
    def parse(cls, text: str, source: str = "config", base: str | Path | None = None) -> Self:
        """Validate YAML text; paths are resolved against ``base`` (the config file's directory)."""
        try:
            lines = _key_lines(yaml.compose(text) if text.strip() else None, source=source)
            data = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source} line {mark.line + 1}" if mark else source
            raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections, not {type(data).__name__}")
        if base is not None:
            cls.resolve_paths(data, Path(base))
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, lines, source)) from None

    @classmethod
    def load(cls, path: str | Path | None = None) -> Self:
        """The configuration in the file at ``path``, or every default when ``path`` is None."""
        if path is None:
            return cls()
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
        return cls.parse(text, source=str(path), base=path.resolve().parent)
