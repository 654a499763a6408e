"""A real PostgreSQL for tests: a throwaway cluster in a temp dir on a free loopback port.

    with Postgres() as server:          # initdb, pg_ctl start; stopped and deleted on exit
        server.url                      # postgresql+psycopg://postgres@127.0.0.1:<port>/collector
        server.new_database()           # the URL of a fresh, empty database
        server.go_down(); server.come_back()    # the server stopped and started again, data kept

The ``postgres`` and ``postgres_url`` fixtures (tests/conftest.py) skip with the reason when the
Debian ``postgresql`` package or psycopg is not installed.
"""

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from support import free_port

DATABASE = "collector"


def find_bin_dir():
    """The newest installed server's bin dir (Debian keeps one per major version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PostgresError(RuntimeError):
    pass


class Postgres:
    def __init__(self, bin_dir=None):
        self.bin_dir = bin_dir or find_bin_dir()
        if self.bin_dir is None:
            raise PostgresError("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="postgres-"))
        self.data = self.dir / "data"
        self.log_path = self.dir / "server.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"
        self._started = False

    def _run(self, *args):
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            # The server refuses to run as root.
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode:
            raise PostgresError(f"{' '.join(command)} failed ({result.returncode}):\n"
                                f"{result.stdout}{result.stderr}{self.log_text()}")
        return result

    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self):
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        # Trust on loopback only, no fsync: a test cluster lives for one pytest session.
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.come_back()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", DATABASE)
        return self

    def come_back(self):
        """Start the server on its port with whatever data it holds."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60",
                  "-o", options, "start")
        self._started = True

    def go_down(self):
        """Stop the server, closing every client's connection, and keep its data for come_back()."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._started = False

    def new_database(self):
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self):
        if self._started:
            self.go_down()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
