"""PID 1 of the kernel-tier guest: run the guest suite, write results, power off.

Started by the initramfs (``tests/kernel/init.sh``) with the host's venv Python on the
overlay root. Runs pytest over ``tests/kernel/guest/`` with junit XML and a log written
to the results share (``/mnt/aiotmc-results``), then powers the VM off. Never returns.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path("/mnt/aiotmc-results")
RB_POWER_OFF = 0x4321FEDC


def console(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def control_port() -> str | None:
    """The /dev node of the virtio-serial port named ``aiotmc.ctl``."""
    for entry in Path("/sys/class/virtio-ports").glob("*"):
        with_name = entry / "name"
        if with_name.is_file() and with_name.read_text().strip() == "aiotmc.ctl":
            return f"/dev/{entry.name}"
    return None


def hello(port: str) -> None:
    """Tell the host that the guest's init runs (it times the boot)."""
    fd = os.open(port, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.write(fd, b'{"op": "hello", "stage": "init"}\n')
        reply = b""
        while b"\n" not in reply:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            reply += chunk
    finally:
        os.close(fd)


def run_suite() -> int:
    root = Path(os.environ.get("AIOTMC_ROOT", "/"))
    args_file = RESULTS / "guest-args.json"
    extra: list[str] = json.loads(args_file.read_text()) if args_file.is_file() else []
    port = None
    for _ in range(50):
        port = control_port()
        if port and os.path.exists(port):
            break
        time.sleep(0.1)
    if port:
        hello(port)
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "AIOTMC_KERNEL_GUEST": "1",
        "AIOTMC_KT_CONTROL": port or "",
        "AIOTMC_KT_RESULTS": str(RESULTS),
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(root / "tests" / "kernel" / "guest"),
        "-o",
        "python_files=kt_*.py",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:hypothesispytest",  # halves pytest's start-up under emulation
        f"--junitxml={RESULTS / 'junit.xml'}",
        "-o",
        "junit_suite_name=kernel-guest",
        "-v",
        "-rfEs",
        "--timeout=60",
        *extra,
    ]
    console("aiotmc-guest: " + " ".join(command))
    started = time.monotonic()
    with (RESULTS / "guest.log").open("w") as log:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            log.write(line)
            log.flush()
            sys.stdout.write(line)
        code = process.wait()
    figures = RESULTS / "figures.json"
    if figures.is_file():
        console("aiotmc-guest figures: " + json.dumps(json.loads(figures.read_text())))
    summary = {"exitstatus": code, "suite_s": round(time.monotonic() - started, 2)}
    (RESULTS / "summary.json").write_text(json.dumps(summary) + "\n")
    return code


def main() -> None:
    try:
        code = run_suite()
        console(f"aiotmc-guest: suite finished with exit status {code}")
    except BaseException as exc:
        console(f"aiotmc-guest: failed: {exc!r}")
    finally:
        os.sync()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.reboot(RB_POWER_OFF)
        time.sleep(5)
        os._exit(1)


if __name__ == "__main__":
    main()
