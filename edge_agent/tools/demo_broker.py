"""The demo's MQTT broker on a free loopback port: mosquitto when installed, else an embedded one.

The embedded broker (amqtt, pure Python) speaks MQTT 3.1.1 only, so the demo tells the agents and
the collector to use that protocol with it.
"""

import asyncio
import logging
import os
import shutil
import subprocess
import threading

from ..common.errors import EdgeAgentError
from .localnet import free_port, wait_listening


def mosquitto_path():
    """Debian installs mosquitto in /usr/sbin, which is not on a normal user's PATH."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


class BrokerError(EdgeAgentError):
    pass


class _Broker:
    def _wait(self, alive, what):
        try:
            wait_listening(self.port, alive, what)
        except RuntimeError as exc:
            raise BrokerError(str(exc)) from None


class MosquittoBroker(_Broker):
    name = "mosquitto"
    protocol = "5"

    def __init__(self, workdir, log_path):
        self.port = free_port()
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = log_path
        self.process = None

    def start(self):
        self.config_path.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            # Windows queue for the collector while it starts; the default 1000 is plenty, this is headroom.
            f"max_queued_messages 100000\nlog_dest stderr\nlog_type error\nlog_type warning\n")
        self.log = open(self.log_path, "a")
        self.process = subprocess.Popen([mosquitto_path(), "-c", str(self.config_path)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self._wait(lambda: self.process.poll() is None, "mosquitto")
        return self

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        if self.process:
            self.log.close()


class EmbeddedBroker(_Broker):
    name = "embedded broker (amqtt)"
    protocol = "3.1.1"

    def __init__(self, workdir, log_path):
        self.port = free_port()
        self.log_path = log_path
        self._loop = None
        self._thread = None
        self._stopped = None
        self._error = None

    def start(self):
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise BrokerError("neither mosquitto (apt install mosquitto) nor the embedded broker "
                              "(pip install -e '.[demo]') is installed") from None
        # Its chatter belongs in the broker log, as mosquitto's does, not on the demo's terminal.
        self._log_handler = logging.FileHandler(self.log_path)
        amqtt_log = logging.getLogger("amqtt")
        amqtt_log.addHandler(self._log_handler)
        amqtt_log.propagate = False
        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                  "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
                  "topic-check": {"enabled": False}}
        ready = threading.Event()

        async def serve():
            broker = Broker(config)
            await broker.start()
            self._stopped = asyncio.Event()
            ready.set()
            await self._stopped.wait()
            await broker.shutdown()

        def run():
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(serve())
            except Exception as exc:  # reported by start(): the thread has no one else to tell
                self._error = exc
                ready.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="embedded broker", daemon=True)
        self._thread.start()
        ready.wait(15)
        if self._error:
            raise BrokerError(f"the embedded broker failed to start: {self._error}")
        self._wait(self._thread.is_alive, "the embedded broker")
        return self

    def stop(self):
        if self._thread and self._thread.is_alive() and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)
        if self._thread:
            logging.getLogger("amqtt").removeHandler(self._log_handler)
            self._log_handler.close()


def open_broker(kind, workdir, log_path):
    """``kind``: auto (mosquitto when installed, else embedded), mosquitto or embedded."""
    if kind == "mosquitto" or (kind == "auto" and mosquitto_path()):
        if not mosquitto_path():
            raise BrokerError("mosquitto is not installed (apt install mosquitto), or use --broker embedded")
        return MosquittoBroker(workdir, log_path)
    return EmbeddedBroker(workdir, log_path)
