"""``password | htpasswd_hash(user)``: a SHA-512 crypt (``$6$``) line's hash for nginx's auth_basic_user_file.

Made on the control node in pure Python: Ansible's own password_hash needs passlib, which a
control node often lacks, and Python 3.13 has no crypt module. As for the broker's passwords,
the salt comes from the user and password, so the same password always gives the same hash and
the file changes only when a password does (reruns stay changed=0). nginx checks it with the
server's crypt(3), which knows ``$6$``. The algorithm is Drepper's "Unix crypt using SHA-512".
"""

import hashlib

# crypt(3)'s default: nginx checks the hash on every request (each page and each image), so a
# costlier one would slow every page; hence the README's advice of long random passwords.
ROUNDS = 5000
SALT_CHARS = 16
ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The order in which the 64 digest bytes are packed into base-64 groups of three.
ORDER = [(0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
         (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
         (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41)]


def _b64(value, count):
    out = []
    for _ in range(count):
        out.append(ALPHABET[value & 0x3F])
        value >>= 6
    return "".join(out)


def _repeat(digest, length):
    return (digest * (length // len(digest) + 1))[:length]


def sha512_crypt(password: bytes, salt: bytes, rounds: int = ROUNDS) -> str:
    alternate = hashlib.sha512(password + salt + password).digest()
    a = hashlib.sha512(password + salt + _repeat(alternate, len(password)))
    length = len(password)
    while length:
        a.update(alternate if length & 1 else password)
        length >>= 1
    a = a.digest()
    p = _repeat(hashlib.sha512(password * len(password)).digest(), len(password))
    s = _repeat(hashlib.sha512(salt * (16 + a[0])).digest(), len(salt))
    c = a
    for i in range(rounds):
        step = hashlib.sha512(p if i & 1 else c)
        if i % 3:
            step.update(s)
        if i % 7:
            step.update(p)
        step.update(c if i & 1 else p)
        c = step.digest()
    encoded = "".join(_b64((c[x] << 16) | (c[y] << 8) | c[z], 4) for x, y, z in ORDER) + _b64(c[63], 2)
    return f"$6$rounds={rounds}${salt.decode()}${encoded}"


def htpasswd_hash(password, user, rounds=ROUNDS):
    secret = str(password).encode()
    seed = hashlib.sha512(b"nginx\0" + str(user).encode() + b"\0" + secret).digest()
    salt = "".join(ALPHABET[byte & 0x3F] for byte in seed[:SALT_CHARS]).encode()
    return sha512_crypt(secret, salt, int(rounds))


class FilterModule:
    def filters(self):
        return {"htpasswd_hash": htpasswd_hash}
