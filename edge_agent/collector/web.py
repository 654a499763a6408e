"""A plain local web server for the dashboard directory, for a quick look (not for a school network)."""

import functools
import http.server
import sys

from ..common.errors import EdgeAgentError


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def serve_directory(directory, bind, port):
    """Serve ``directory`` until Ctrl-C; the first line printed says where."""
    if not (directory / "index.html").is_file():
        raise EdgeAgentError(f"{directory} has no index.html yet: run `edge-collector run` or "
                             "`edge-collector dashboard` first")
    handler = functools.partial(_Handler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer((bind, port), handler)
    except OSError as exc:
        raise EdgeAgentError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
    host, port = server.server_address[:2]
    print(f"serving {directory} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
