"""``password | htpasswd_hash(salt, cost)``: a bcrypt (``$2b$``) hash for nginx's auth_basic_user_file.

Made on the control node with the bcrypt package (pyca), so the server keeps only the hash. nginx
checks it with the server's crypt(3); Debian's libxcrypt knows ``$2b$``. ``salt`` is 16 random
bytes (as hex) the collector role made once per dashboard user and keeps with the secrets: a
rerun gives the same hash (the file changes only when a password or a salt does), and since the
salt owes nothing to the password, the only way to test a guess is the full bcrypt at ``cost``.
"""

import base64

from ansible.errors import AnsibleFilterError

SALT_BYTES = 16
# bcrypt reads no further: a longer password would be cut silently, so validation refuses one.
MAX_PASSWORD_BYTES = 72
_STANDARD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BCRYPT = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def bcrypt_salt(salt_bytes, cost):
    """The ``$2b$CC$`` + 22-character setting string bcrypt hashes with, from 16 salt bytes."""
    encoded = base64.b64encode(salt_bytes).decode().rstrip("=").translate(str.maketrans(_STANDARD, _BCRYPT))
    return f"$2b${int(cost):02d}${encoded}"


def htpasswd_hash(password, salt, cost):
    try:
        import bcrypt
    except ImportError:
        raise AnsibleFilterError("htpasswd_hash: the dashboard's password hashes need the bcrypt package on the "
                                 "control node: pip install bcrypt, where Ansible is installed") from None
    try:
        salt_bytes = bytes.fromhex(str(salt).strip())
    except ValueError:
        salt_bytes = b""
    if len(salt_bytes) != SALT_BYTES:
        raise AnsibleFilterError(f"htpasswd_hash: the salt must be {SALT_BYTES * 2} hex digits (the collector role's "
                                 "salts/dashboard/USER file); delete a damaged one and run again")
    if not 4 <= int(cost) <= 31:
        raise AnsibleFilterError(f"htpasswd_hash: collector_web_password_cost {cost} is not a bcrypt cost (4-31)")
    secret = str(password).encode()
    if len(secret) > MAX_PASSWORD_BYTES or b"\0" in secret:
        raise AnsibleFilterError(f"htpasswd_hash: a password is longer than {MAX_PASSWORD_BYTES} bytes or holds a "
                                 "NUL, which bcrypt cannot hash whole")
    return bcrypt.hashpw(secret, bcrypt_salt(salt_bytes, cost).encode()).decode()


class FilterModule:
    def filters(self):
        return {"htpasswd_hash": htpasswd_hash}
