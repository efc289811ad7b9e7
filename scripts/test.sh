#!/usr/bin/env bash
# Install everything the test suite needs on a Debian/Ubuntu machine, then run it all:
# lint (ruff), types (mypy --strict), and pytest (asyncio + trio, real sockets, real
# subprocesses, real libusb below umockdev, the kernel USB stack under QEMU). This is the README's second Quick start line
# and what .ci/run executes.
set -euo pipefail
cd "$(dirname "$0")/.."

# umockdev: real libusb against the emulated instrument; qemu/busybox/kmod: the kernel
# USB stack tier (tests/kernel), which boots a stock Debian kernel under QEMU; chromium:
# the web dashboard's end-to-end test in a headless browser; lxi-tools: an independent
# VXI-11 client (liblxi) judging the VXI-11 simulator; rpcbind: the portmapper it registers with.
APT_PACKAGES=(umockdev gir1.2-umockdev-1.0 python3-gi libusb-1.0-0
    qemu-system-x86 busybox-static kmod chromium chromium-driver lxi-tools rpcbind)
# socat: serial tests through pty bridges. The gateway's real services, each started by the
# tests on loopback: mosquitto (MQTT broker), postgresql (a private cluster per run),
# victoria-metrics (InfluxDB line protocol in, query API out), nats-server (JetStream);
# mosquitto-clients: mosquitto_rr and mosquitto_sub, independent MQTT clients of the gateway.
APT_PACKAGES+=(socat mosquitto mosquitto-clients postgresql victoria-metrics nats-server)
# gcc: the GPIB tests compile a stub libgpib.so (tests/transports/gpib/libgpib_stub.c).
APT_PACKAGES+=(gcc)
# valgrind: callgrind counts a client's instructions per query (benchmarks/instructions.py).
APT_PACKAGES+=(valgrind)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "== installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

source scripts/_venv.sh
ensure_venv
echo "== installing aiotmc[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"

echo "== kernel for the QEMU tier (cached in ~/.cache/aiotmc-kernel)"
if [ "${AIOTMC_KERNEL_TIER:-1}" != "0" ]; then
    .venv/bin/python -m tests.kernel.harness --fetch \
        || { $SUDO apt-get update -qq && .venv/bin/python -m tests.kernel.harness --fetch; }
fi

echo "== ruff"
.venv/bin/ruff check aiotmc pyvisa_aiotmc testbeds tests examples benchmarks scripts
.venv/bin/ruff format --check aiotmc pyvisa_aiotmc testbeds tests examples benchmarks scripts
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
