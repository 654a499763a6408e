"""When the agent may stamp windows, and with what time.

A Raspberry Pi has no battery-backed clock: it boots at the time it had when it last shut down
(fake-hwclock) or at 1970, and NTP steps it later, by hours or days, and now and then backwards.
Two rules follow, and this module keeps both:

- **Windows are stamped only once the system clock is synchronised.** The kernel knows: NTP
  daemons (systemd-timesyncd, chrony) clear its "unsynchronised" flag, which adjtimex(2) reads.
  Inside the unit's system-call filter that call is refused (EPERM), and then timedated is asked
  instead (``timedatectl show -p NTPSynchronized``), which reads the same flag outside the
  sandbox. Until one of them says yes, frames are analysed but counted in no window.
- **Stamps never go back, and never repeat.** The stamp clock follows the system clock and
  notices steps by comparing it with CLOCK_MONOTONIC, which NTP slews alike but never steps.
  A step forward is followed at once: the open window closes at the jump and the next one opens
  at the new time (one gap, no run of empty windows). A step back cannot be followed without
  stamping a second, different window under a ``(device, window_start)`` already sent, and
  cannot be waited out without going silent for as long as the step: so the stamps go on from
  where they were, one window length per window length, ahead of the system clock by the size
  of the step. They stay ahead until the system clock catches up: a later step forward takes
  the lead off first, and an agent that starts with its last stored window still ahead of the
  clock begins there. How far ahead is reported (status, stats, the journal); the collector
  stores such windows under their stamps and counts them (see its ingest).

Both clocks and the sync check are injectable: they are the seams for the hardware's time.
"""

import ctypes
import ctypes.util
import logging
import shutil
import subprocess
import time
from collections.abc import Callable

from ..common.contract import format_utc

log = logging.getLogger(__name__)

# adjtimex(2): the return value TIME_ERROR, and the status bit STA_UNSYNC, both mean "not synchronised".
TIME_ERROR = 5
STA_UNSYNC = 0x0040
# A disagreement between the wall and the monotonic clock at least this large is a step; smaller
# ones (a leap second) are left to the tally, which never opens a window before the last one.
STEP_S = 2.0
# How often an unsynchronised clock is asked again.
SYNC_CHECK_S = 5.0
TIMEDATECTL_TIMEOUT_S = 5.0


class _Timex(ctypes.Structure):
    # The head of struct timex (<sys/timex.h>); the rest is room for the kernel to fill.
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("_rest", ctypes.c_char * 256)]


def kernel_synchronized() -> bool | None:
    """The kernel's word (adjtimex with no change asked), or None where the call is refused."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None
    timex = _Timex()  # modes 0: read only
    state = libc.adjtimex(ctypes.byref(timex))
    if state == -1:
        return None  # EPERM from a system-call filter (the unit's), or no such call
    return state != TIME_ERROR and not timex.status & STA_UNSYNC


def timedated_synchronized() -> bool | None:
    """timedated's NTPSynchronized, or None where timedatectl or the system bus is not there."""
    command = shutil.which("timedatectl")
    if command is None:
        return None
    try:
        result = subprocess.run([command, "show", "--property=NTPSynchronized", "--value"],
                                capture_output=True, text=True, timeout=TIMEDATECTL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    answer = result.stdout.strip()
    if result.returncode or answer not in ("yes", "no"):
        return None
    return answer == "yes"


def system_clock_synchronized() -> bool | None:
    """True once NTP has synchronised the system clock; None when neither source can tell."""
    found = kernel_synchronized()
    return timedated_synchronized() if found is None else found


class StampClock:
    """Epoch seconds to stamp windows with: the system clock, held ahead of it after a step back."""

    def __init__(self, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 step_s: float = STEP_S):
        self._wall, self._monotonic = wall, monotonic
        self.step_s = step_s
        self.ahead_s = 0.0            # how far the stamps run ahead of the system clock
        self._last: tuple[float, float] | None = None  # (wall, monotonic) at the last reading

    def start(self, floor: float | None, length_s: int) -> None:
        """Stamp from now on; an outbox whose last window ends more than a window ahead begins there."""
        wall = self._wall()
        self._last = (wall, self._monotonic())
        if floor is not None and floor - wall > length_s:
            self.ahead_s = floor - wall
            log.warning("the last window stored ends at %s, %.0f s ahead of the system clock (it stepped back "
                        "since): windows are stamped on from there until the clock catches up",
                        format_utc(floor), self.ahead_s)

    def now(self) -> float:
        wall, monotonic = self._wall(), self._monotonic()
        if self._last is None:
            self._last = (wall, monotonic)
        step = (wall - self._last[0]) - (monotonic - self._last[1])
        self._last = (wall, monotonic)
        if step <= -self.step_s:
            self.ahead_s -= step
            log.warning("the system clock stepped back %.0f s (to %s): windows are stamped on without a break, "
                        "%.0f s ahead of it, so that no minute is stamped twice", -step, format_utc(wall),
                        self.ahead_s)
        elif step >= self.step_s:
            caught_up = min(self.ahead_s, step)
            self.ahead_s -= caught_up
            log.warning("the system clock stepped forward %.0f s (to %s)%s", step, format_utc(wall),
                        f"; stamps are now {self.ahead_s:.0f} s ahead of it" if caught_up else
                        ": the open window closes at the jump")
        return wall + self.ahead_s


class AgentClock:
    """What the agent's loop asks each frame: may windows be stamped yet, and with what time.

    ``stamp()`` is None until the clock is synchronised (asked every ``check_every_s``), then
    the StampClock's time. ``floor`` is the end of the last window stored (None: none).
    """

    def __init__(self, *, require_sync: bool = True, length_s: int = 60, floor: float | None = None,
                 synchronized: Callable[[], bool | None] = system_clock_synchronized,
                 wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 check_every_s: float = SYNC_CHECK_S):
        self.require_sync = require_sync
        self.length_s = length_s
        self.floor = floor
        self._synchronized = synchronized
        self._monotonic = monotonic
        self.check_every_s = check_every_s
        self.stamps = StampClock(wall, monotonic)
        self.synced = False
        self.answer: bool | None = None  # the sync check's last answer: True, False or None (cannot tell)
        self.waiting_since = monotonic()
        self._next_check = self.waiting_since

    @property
    def waiting(self) -> bool:
        return not self.synced

    def stamp(self) -> float | None:
        if not self.synced:
            now = self._monotonic()
            if now < self._next_check:
                return None
            self._next_check = now + self.check_every_s
            self.answer = True if not self.require_sync else self._synchronized()
            if not self.answer:
                return None
            self.synced = True
            self.stamps.start(self.floor, self.length_s)
            if self.require_sync:
                log.info("the system clock is synchronised (%s): windows start", format_utc(self.stamps.now()))
        return self.stamps.now()

    def waiting_text(self) -> str:
        """The status line's words while windows wait for the clock."""
        minutes = (self._monotonic() - self.waiting_since) / 60
        why = ("" if self.answer is not None else
               ": neither adjtimex nor timedatectl can tell; set clock.require_sync: false if this clock is right")
        return f"waiting for clock sync ({minutes:.0f} min so far{why})"
