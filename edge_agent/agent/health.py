"""What the agent's stats messages say about the board it runs on: CPU temperature, load and memory.

Each reading is None where the machine cannot give it (a VM has no thermal zone), never an error:
health figures must not take the agent down.
"""

import os
import re
import sys
from pathlib import Path

# Thermal zone types that measure the CPU: "cpu-thermal" on a Raspberry Pi, "x86_pkg_temp" on
# Intel, "soc_thermal"/"cpu_thermal" on other ARM boards.
_CPU_ZONE = re.compile(r"cpu|x86_pkg_temp|soc_thermal", re.IGNORECASE)


def _zone_number(path):
    digits = path.name[len("thermal_zone"):]
    return int(digits) if digits.isdigit() else sys.maxsize


def cpu_temperature_c(root="/sys/class/thermal"):
    """The CPU temperature in °C from the kernel's thermal zones, or None where there is none (VMs).

    The first zone whose type names the CPU wins; otherwise the first zone that can be read.
    """
    first = None
    for zone in sorted(Path(root).glob("thermal_zone*"), key=_zone_number):
        try:
            millidegrees = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue  # some zones (a Wi-Fi chip that is down) refuse to be read
        try:
            kind = (zone / "type").read_text().strip()
        except OSError:
            kind = ""
        celsius = millidegrees / 1000
        if _CPU_ZONE.search(kind):
            return celsius
        if first is None:
            first = celsius
    return first


def load_1m():
    """The system's load average over the last minute, or None where the OS cannot say."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def rss_mb():
    """This process's resident memory in MiB, or None where /proc cannot say."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None
