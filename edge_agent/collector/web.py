"""A plain local web server for the dashboard directory, for a quick look on the server's own screen.

Invariants:
- It has no login and no per-room rules: it serves every room to whoever reaches it. So it
  listens on a loopback address unless its caller passes ``without_login=True`` (the command's
  ``--without-login``), which says in so many words what the pages are then served without.
- The bind address is checked before the directory is served; a name is resolved and every
  address it resolves to must be loopback.
"""

import functools
import http.server
import ipaddress
import socket
import sys

from ..common.errors import EdgeAgentError


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def is_loopback(bind: str) -> bool:
    """True when every address ``bind`` names is a loopback one ("" and 0.0.0.0 are every interface)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(bind or None, 0, proto=socket.IPPROTO_TCP,
                                                               flags=socket.AI_PASSIVE)}
    except socket.gaierror as exc:
        raise EdgeAgentError(f"--bind {bind}: not an address of this host ({exc.strerror or exc})") from None
    # TCP over IPv4 or IPv6: every sockaddr's host is a string (typeshed allows AF_CAN's int too).
    return all(ipaddress.ip_address(str(address).split("%")[0]).is_loopback for address in addresses)


def serve_directory(directory, bind, port, without_login=False):
    """Serve ``directory`` until Ctrl-C; the first line printed says where."""
    if not without_login and not is_loopback(bind):
        raise EdgeAgentError(f"--bind {bind or repr(bind)} would serve every room to anyone who reaches it, with no "
                             "login: keep the default 127.0.0.1, put the role's nginx (collector_web_server) in "
                             "front of the directory, or add --without-login to serve it so anyway")
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
