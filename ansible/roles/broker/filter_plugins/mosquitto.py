"""``password | mosquitto_hash(salt)``: a line's hash for mosquitto's password_file, made on the control node.

The format is exactly what mosquitto_passwd writes (mosquitto 2's PBKDF2-SHA512, ``$7$``, with
its default iteration count and salt length), only the salt is not drawn anew on every run: it is
``salt``, 12 random bytes (as hex) the secrets role made once per user and keeps beside the
passwords. So a rerun writes the same file, and the file changes only when a password or a salt
does. Nothing in the salt depends on the password: the hash is the only way to test a guess.
"""

import base64
import hashlib

from ansible.errors import AnsibleFilterError

# mosquitto_passwd's defaults (mosquitto 2.0: PW_DEFAULT_ITERATIONS, SALT_LEN).
ITERATIONS = 101
SALT_BYTES = 12


def mosquitto_hash(password, salt, iterations=ITERATIONS):
    try:
        salt_bytes = bytes.fromhex(str(salt).strip())
    except ValueError:
        salt_bytes = b""
    if len(salt_bytes) != SALT_BYTES:
        raise AnsibleFilterError(f"mosquitto_hash: the salt must be {SALT_BYTES * 2} hex digits (the secrets role's "
                                 "salts/mqtt/USER file); delete a damaged one and run again")
    digest = hashlib.pbkdf2_hmac("sha512", str(password).encode(), salt_bytes, int(iterations), 64)
    encode = base64.b64encode
    return f"$7${int(iterations)}${encode(salt_bytes).decode()}${encode(digest).decode()}"


class FilterModule:
    def filters(self):
        return {"mosquitto_hash": mosquitto_hash}
