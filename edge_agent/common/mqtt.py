"""The MQTT client both sides start from: protocol version, TLS, credentials, and problems in words.

Connection problems become one sentence that says what to check (a refused password names the
file or variable it came from, an unverifiable certificate names ``mqtt.tls.ca``), never a paho
error code. A TLS file that cannot be loaded is a configuration error, raised before any
connection is tried.
"""

import socket
import ssl
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .config import BrokerConfig
from .errors import EdgeAgentError

# CONNACK reason codes (MQTT 5; paho maps 3.1.1 return codes onto them) and what to check.
_CREDENTIALS = (0x86, 0x87, 0x8C)  # bad user name or password, not authorized, bad auth method
_CLIENT_ID = 0x85
_BANNED = 0x8A


class MQTTError(EdgeAgentError):
    """The broker cannot be used as configured; the message says why."""


PROTOCOLS = {"5": paho.MQTTv5, "3.1.1": paho.MQTTv311}


def new_client(mqtt_config: BrokerConfig, client_id: str, *, persistent: bool = False, **kwargs: Any) -> "_Client":
    """A paho client speaking ``mqtt_config.protocol``.

    ``persistent``: the broker keeps the session while we are away. MQTT 5 asks for that at
    connect (see ``connect_options``); MQTT 3.1.1 when the client is made (clean_session).
    """
    protocol = PROTOCOLS[mqtt_config.protocol]
    if protocol != paho.MQTTv5:
        kwargs["clean_session"] = not persistent
    return _Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs)


def connect_options(mqtt_config: BrokerConfig, *, clean_start: bool,
                    properties: Properties | None = None) -> dict[str, Any]:
    """Keywords for connect() and connect_async(): clean start and properties are MQTT 5 only."""
    options: dict[str, Any] = {"keepalive": mqtt_config.keepalive_s}
    if mqtt_config.protocol == "5":
        options.update(clean_start=clean_start, properties=properties)
    return options


class _Client(paho.Client):
    """paho's client, remembering why the last attempt to open the socket failed.

    on_connect_fail carries no error, and "connection refused", "name not known" and "certificate
    verify failed" need different fixes.
    """

    last_socket_error: OSError | None = None

    def _create_socket(self) -> "paho.SocketLike":  # paho defines SocketLike for type checkers only
        try:
            sock = super()._create_socket()
        except OSError as exc:
            self.last_socket_error = exc
            raise
        self.last_socket_error = None
        return sock


def describe_socket_error(exc: OSError | None) -> str:
    """Why opening the socket failed, in words that point at the fix."""
    if exc is None:
        return "cannot connect"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror or exc})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted ({exc.verify_message or exc}) — check mqtt.tls.ca"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "connection timed out"
    return (exc.strerror or str(exc)).lower()


def _password_hint(config: BrokerConfig) -> str:
    if config.password_env:
        return f"check mqtt.username and the password in ${config.password_env}"
    if config.password_file:
        return f"check mqtt.username and the password file {config.password_file}"
    return "the broker wants a login: set mqtt.username and mqtt.password_file"


def refusal_text(config: BrokerConfig, reason_code: ReasonCode) -> str:
    """The broker's refusal of a CONNECT, with what to check for the usual reasons."""
    where = f"{config.host}:{config.port}"
    text = f"broker {where} refused the connection: {str(reason_code).lower()}"
    value = getattr(reason_code, "value", None)
    if value in _CREDENTIALS:
        return f"{text} — {_password_hint(config)}"
    if value == _CLIENT_ID:
        return f"{text} — check device.id (it is the client id)"
    if value == _BANNED:
        return f"{text} — the broker has banned this client"
    return text


def configure_tls(client: paho.Client, config: BrokerConfig) -> None:
    """TLS from the config; a file that cannot be loaded is a configuration error, not a network one."""
    if config.tls is not None:
        tls = config.tls
        try:
            client.tls_set(ca_certs=str(tls.ca) if tls.ca else None,
                           certfile=str(tls.cert) if tls.cert else None,
                           keyfile=str(tls.key) if tls.key else None)
        except (OSError, ValueError) as exc:
            raise MQTTError(f"mqtt.tls: cannot load the certificates: {exc}") from None


def set_credentials(client: paho.Client, config: BrokerConfig) -> None:
    password = config.password()
    if config.username is not None or password is not None:
        client.username_pw_set(config.username, password)


def probe_broker(mqtt_config: BrokerConfig, *, client_id: str, session_expiry_s: float | None = None,
                 timeout: float = 10.0) -> str:
    """Connect once and disconnect: a line for ``edge-agent check`` and ``edge-collector check``, or
    MQTTError saying why not.

    Nothing is published, and the caller passes a client id other than its service's. A broker
    that binds client ids to user names (mosquitto's use_username_as_clientid, as the Ansible
    role sets it) ignores that id: the probe then logs in as its service's own session, and the
    running service reconnects a moment later. So a service with a persistent session (the
    collector's) passes its ``session_expiry_s``: the probe resumes the session, if there is one,
    with that same expiry and acknowledges nothing, so every window queued in it stays for the
    service; a session the probe made itself is ended as it leaves.
    """
    where = f"{mqtt_config.host}:{mqtt_config.port}"
    resume = session_expiry_s is not None
    mqtt5 = mqtt_config.protocol == "5"
    client = new_client(mqtt_config, client_id, persistent=resume, reconnect_on_failure=False, manual_ack=resume)
    configure_tls(client, mqtt_config)
    set_credentials(client, mqtt_config)
    client.connect_timeout = timeout
    answer: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(client: paho.Client, userdata: object, flags: paho.ConnectFlags, reason_code: ReasonCode,
                   properties: Properties | None) -> None:
        answer["reason"] = reason_code
        answer["session_present"] = flags.session_present
        done.set()

    client.on_connect = on_connect
    properties = None
    if session_expiry_s is not None and mqtt5:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = int(session_expiry_s)
    try:
        client.connect(mqtt_config.host, mqtt_config.port,
                       **connect_options(mqtt_config, clean_start=not resume, properties=properties))
    except OSError as exc:
        raise MQTTError(f"cannot connect to broker {where}: {describe_socket_error(exc)}") from None
    client.loop_start()
    made_a_session = False
    try:
        done.wait(timeout)
        made_a_session = resume and "reason" in answer and not answer["reason"].is_failure \
            and not answer["session_present"]
    finally:
        if made_a_session and mqtt5:
            ending = Properties(PacketTypes.DISCONNECT)
            ending.SessionExpiryInterval = 0
            client.disconnect(properties=ending)
        else:
            client.disconnect()
        client.loop_stop()
    if made_a_session and not mqtt5:
        # MQTT 3.1.1 can only end a session by connecting again with a clean one.
        probe_broker(mqtt_config, client_id=client_id, timeout=timeout)
    reason = answer.get("reason")
    if reason is None:
        raise MQTTError(f"broker {where} accepted the connection but did not answer within {timeout:g} s")
    if reason.is_failure:
        raise MQTTError(refusal_text(mqtt_config, reason))
    login = f"as {mqtt_config.username}" if mqtt_config.username else "anonymously"
    return f"{where}: connected {login}{' over TLS' if mqtt_config.tls else ''}"
