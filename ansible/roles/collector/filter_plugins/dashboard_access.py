"""Filters for the dashboard's login and per-room access: checking ``dashboard_users``, and nginx's path rules.

``dashboard_users`` is a list of ``{name, password, rooms}``; rooms are ``site/room`` globs
(``*`` and ``?`` within one name) or ``all``. Users with ``all`` are IT and see everything; every
other user gets an access group of their own name, which the collector writes an index for
(groups/NAME/index.html) and nginx grants with that user's rooms (rooms/SITE/ROOM.html and
rooms/SITE/ROOM/). ``metrics_scrapers`` (``{name, password}``) share the same login file and may
read /metrics alone; their names are no dashboard user's.
"""

import re

USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PART = r"[A-Za-z0-9_.*?-]{1,64}"
PATTERN = re.compile(rf"all|{PART}/{PART}")
# bcrypt (filter htpasswd_hash) reads no further.
MAX_PASSWORD_BYTES = 72


def _glob_regex(pattern):
    """A ``site/room`` glob as a regex over those two path parts: wildcards never cross a slash."""
    out = []
    for char in pattern:
        out.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
    return "".join(out)


def _login_problems(who, user, seen):
    """A login's name and password: what the dashboard's users and the metrics' scrapers have alike."""
    problems = []
    name = str(user.get("name", ""))
    if not USER.fullmatch(name):
        problems.append(f"{who}: key name must be 1-64 letters, digits, _ . - (it names a folder and a login)")
    elif name in seen:
        problems.append(f"{who}: key name is used twice (by dashboard_users or metrics_scrapers)")
    seen.add(name)
    password = user.get("password")
    if password is None or str(password) == "":
        problems.append(f"{who}: key password is missing; put it in Ansible Vault "
                        "(ansible-vault encrypt_string) and set it there")
    elif len(str(password).encode()) > MAX_PASSWORD_BYTES or "\0" in str(password):
        problems.append(f"{who}: key password is longer than {MAX_PASSWORD_BYTES} bytes or holds a NUL; bcrypt "
                        "would check only its start: choose a shorter one (six random words are plenty)")
    return problems


def _who(kind, user, number):
    name = str(user.get("name", ""))
    # repr for a name with a newline or another control character: the message stays one line.
    return f"{kind} user {name if name.isprintable() else repr(name)}" if name else f"{kind} item {number}"


def metrics_problems(scrapers, users, metrics=False, web_server=False, prometheus=False):
    """One line per mistake in the metrics settings: ``metrics_scrapers`` logins, and what needs what."""
    problems = []
    if prometheus and not metrics:
        problems.append("collector_prometheus: true needs collector_metrics: true (Prometheus scrapes the "
                        "collector's metrics port)")
    if not scrapers:
        return problems
    if not (metrics and web_server):
        problems.append("metrics_scrapers: nginx serves /metrics only with collector_metrics: true and "
                        "collector_web_server: true; set both or remove metrics_scrapers")
    if not isinstance(scrapers, list):
        return [*problems, "metrics_scrapers: not a list of name and password"]
    seen = {str(user.get("name", "")) for user in users or [] if isinstance(user, dict)}
    for number, user in enumerate(scrapers, 1):
        if not isinstance(user, dict):
            problems.append(f"metrics_scrapers item {number}: not a mapping of name and password")
            continue
        who = _who("metrics_scrapers", user, number)
        unknown = sorted(set(user) - {"name", "password"})
        if unknown:
            problems.append(f"{who}: unknown key {', '.join(unknown)} (keys: name, password)")
        problems += _login_problems(who, user, seen)
    return problems


def dashboard_problems(users, rooms, web_server=True):
    """One line per mistake in ``dashboard_users``, each naming the user and the key; ``rooms``: known site/room."""
    if not web_server:
        return []
    if not isinstance(users, list) or not users:
        return ["dashboard_users: no one could log in to the dashboard; list at least one user "
                "(name, password, rooms) or set collector_web_server: false"]
    problems, seen = [], set()
    for number, user in enumerate(users, 1):
        if not isinstance(user, dict):
            problems.append(f"dashboard_users item {number}: not a mapping of name, password and rooms")
            continue
        who = _who("dashboard_users", user, number)
        unknown = sorted(set(user) - {"name", "password", "rooms"})
        if unknown:
            problems.append(f"{who}: unknown key {', '.join(unknown)} (keys: name, password, rooms)")
        problems += _login_problems(who, user, seen)
        patterns = user.get("rooms")
        if isinstance(patterns, str):
            patterns = [patterns]
        if not patterns:
            problems.append(f"{who}: key rooms is empty; give site/room patterns (north/101, north/2*) or all")
            continue
        for pattern in patterns:
            pattern = str(pattern)
            if not PATTERN.fullmatch(pattern):
                problems.append(f"{who}: key rooms: {pattern!r} is not all or site/room (wildcards * ?)")
            elif pattern != "all" and not any(re.fullmatch(_glob_regex(pattern), room) for room in rooms):
                problems.append(f"{who}: key rooms: {pattern} matches no camera's site/room in the inventory "
                                f"({', '.join(sorted(rooms)) or 'none'})")
    return problems


def _patterns(user):
    rooms = user.get("rooms") or []
    return [str(rooms)] if isinstance(rooms, str) else [str(pattern) for pattern in rooms]


def dashboard_it(user):
    return "all" in _patterns(user)


def dashboard_access(users):
    """The collector's ``dashboard.access``: a group per user who is not IT, with that user's rooms."""
    return {str(user["name"]): _patterns(user) for user in users or [] if not dashboard_it(user)}


def dashboard_path_rules(users):
    """``[(regex, value)]`` for nginx's map of ``"$remote_user:$uri"`` to the file it may serve."""
    rules = []
    for user in users or []:
        name = re.escape(str(user["name"]))
        if dashboard_it(user):
            rules.append(f"^{name}:/")
            continue
        rules.append(rf"^{name}:/groups/{name}/index\.html$")
        for pattern in _patterns(user):
            rules.append(rf"^{name}:/rooms/{_glob_regex(pattern)}(\.html$|/)")
    return rules


class FilterModule:
    def filters(self):
        return {"dashboard_problems": dashboard_problems, "metrics_problems": metrics_problems,
                "dashboard_access": dashboard_access,
                "dashboard_path_rules": dashboard_path_rules, "dashboard_it": dashboard_it}
