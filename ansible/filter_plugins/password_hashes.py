"""The password hashes the servers keep, made on the control node from a password and its kept salt.

``password | mosquitto_hash(salt)`` (the broker role): a line's hash for mosquitto's
password_file, exactly what mosquitto_passwd writes (mosquitto 2's PBKDF2-SHA512, ``$7$``, with
its default iteration count and salt length). ``salt`` is 12 random bytes (as hex) the secrets
role made once per user and keeps beside the passwords.

``password | htpasswd_hash(salt, cost)`` (the collector role): a bcrypt (``$2b$``) hash for
nginx's auth_basic_user_file, made with the bcrypt package (pyca); nginx checks it with the
server's crypt(3), and Debian's libxcrypt knows ``$2b$``. ``salt`` is 16 random bytes (as hex)
the collector role made once per dashboard user and keeps with the secrets.

Neither salt is drawn anew on a run, so a rerun writes the same file (it changes only when a
password or a salt does), and since a salt owes nothing to the password, the only way to test a
guess is the full hash.

Both roles' filters live here, beside site.yml (ansible.cfg's ``filter_plugins``), because a
role's own filter plugins cannot import code from anywhere else: one parser of the kept salts.
"""

import base64
import hashlib

from ansible.errors import AnsibleFilterError

# mosquitto_passwd's defaults (mosquitto 2.0: PW_DEFAULT_ITERATIONS, SALT_LEN).
MOSQUITTO_ITERATIONS = 101
MOSQUITTO_SALT_BYTES = 12
BCRYPT_SALT_BYTES = 16
# bcrypt reads no further: a longer password would be cut silently, so validation refuses one.
MAX_PASSWORD_BYTES = 72
_STANDARD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BCRYPT = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def kept_salt(salt, size, who, where):
    """The ``size`` bytes of a kept salt file's hex text, or an error naming the filter ``who`` and the file."""
    try:
        salt_bytes = bytes.fromhex(str(salt).strip())
    except ValueError:
        salt_bytes = b""
    if len(salt_bytes) != size:
        raise AnsibleFilterError(f"{who}: the salt must be {size * 2} hex digits ({where}); "
                                 "delete a damaged one and run again")
    return salt_bytes


def mosquitto_hash(password, salt, iterations=MOSQUITTO_ITERATIONS):
    salt_bytes = kept_salt(salt, MOSQUITTO_SALT_BYTES, "mosquitto_hash", "the secrets role's salts/mqtt/USER file")
    digest = hashlib.pbkdf2_hmac("sha512", str(password).encode(), salt_bytes, int(iterations), 64)
    encode = base64.b64encode
    return f"$7${int(iterations)}${encode(salt_bytes).decode()}${encode(digest).decode()}"


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
    salt_bytes = kept_salt(salt, BCRYPT_SALT_BYTES, "htpasswd_hash", "the collector role's salts/dashboard/USER file")
    if not 4 <= int(cost) <= 31:
        raise AnsibleFilterError(f"htpasswd_hash: collector_web_password_cost {cost} is not a bcrypt cost (4-31)")
    secret = str(password).encode()
    if len(secret) > MAX_PASSWORD_BYTES or b"\0" in secret:
        raise AnsibleFilterError(f"htpasswd_hash: a password is longer than {MAX_PASSWORD_BYTES} bytes or holds a "
                                 "NUL, which bcrypt cannot hash whole")
    return bcrypt.hashpw(secret, bcrypt_salt(salt_bytes, cost).encode()).decode()


class FilterModule:
    def filters(self):
        return {"mosquitto_hash": mosquitto_hash, "htpasswd_hash": htpasswd_hash}
