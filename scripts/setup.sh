#!/usr/bin/env bash
# Install everything the product (both sides), its model build and its tests need on Debian 12 (bookworm).
# Run from anywhere as root (or with sudo available); safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# libsystemd-dev and pkg-config build systemd-python; mosquitto is the broker the tests start;
# systemd provides systemd-analyze for the unit-file tests; debootstrap and systemd-container
# boot the real systemd the service tests run under; postgresql is the server the store tests start;
# chromium and chromium-driver open the dashboard in a real browser; prometheus is the server the
# metrics tests start and brings promtool, which checks and unit-tests the alert rules; binfmt-support and
# qemu-user-static (below) run arm64 binaries, so the Pi tests install and boot arm64 Debian here.
APT_PACKAGES=(python3 python3-venv python3-dev python3-pip build-essential libsystemd-dev pkg-config
              mosquitto systemd debootstrap systemd-container postgresql chromium chromium-driver
              prometheus binfmt-support)
missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
if ((${#missing[@]})); then
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
    # The tests start their own Prometheus on loopback; the package's service, listening on every
    # address, is not wanted on the machine that runs them.
    if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
        $SUDO systemctl disable --now prometheus
    fi
fi
# qemu 10 or later: Debian 12's own 7.2 crashes LiteRT's int8 kernels in emulated arm64, so on
# bookworm it comes from bookworm-backports (later Debian releases carry 10 themselves).
qemu=$(dpkg-query -W -f='${Version}' qemu-user-static 2>/dev/null || true)
if [[ -z $qemu ]] || dpkg --compare-versions "$qemu" lt 1:10; then
    release=()
    if grep -q '^VERSION_CODENAME=bookworm' /etc/os-release; then
        echo "deb http://deb.debian.org/debian bookworm-backports main" \
            | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
        release=(-t bookworm-backports)
    fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${release[@]}" qemu-user-static
fi

PYTHON="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# Both distributions, editable: the agent's (edge-agent, with the model build, the tests and the
# demo, which bring the collector's packages too), then the collector's (the edge-collector command;
# second, so that replacing an older edge-agent cannot take its command away).
.venv/bin/python -m pip install --quiet -e '.[model,test,demo]'
.venv/bin/python -m pip install --quiet -e ./collector
# The float weights are the reference for tests and benchmarks; fetched once, checked by sha256.
.venv/bin/edge-agent model fetch
