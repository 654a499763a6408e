"""``password | mosquitto_hash(user)``: a line's hash for mosquitto's password_file, made on the control node.

mosquitto_passwd salts each hash at random, so running it on every play would rewrite the
password file every time. Here the salt comes from the user and password, so the same
password always gives the same line and the file changes only when a password does. The
format is mosquitto 2's PBKDF2-SHA512 (``$7$``) with its default iteration count.
"""

import base64
import hashlib

ITERATIONS = 101
SALT_BYTES = 12


def mosquitto_hash(password, user, iterations=ITERATIONS):
    secret = str(password).encode()
    salt = hashlib.sha512(str(user).encode() + b"\0" + secret).digest()[:SALT_BYTES]
    digest = hashlib.pbkdf2_hmac("sha512", secret, salt, iterations, 64)
    encode = base64.b64encode
    return f"$7${iterations}${encode(salt).decode()}${encode(digest).decode()}"


class FilterModule:
    def filters(self):
        return {"mosquitto_hash": mosquitto_hash}
