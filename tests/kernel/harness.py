"""Host side of the kernel tier: fetch a Debian kernel, build an initramfs, boot QEMU.

The guest is a stock Debian kernel (``linux-image-<ver>-amd64``, fetched with
``apt-get download`` and unpacked with ``dpkg -x`` into a cache) under
``qemu-system-x86_64 -M q35`` (TCG unless KVM is really usable), with an emulated xHCI
controller and a ``usb-redir`` device. Its root is this machine's ``/`` over virtio-9p
(read-only, with a tmpfs overlay), so it runs this checkout and venv. A second 9p share
(read-write) carries junit XML and logs back.

The emulated instruments run *here*, on the host: :class:`DeviceHub` serves the guest's
requests arriving on a virtio-serial port (``plug``, ``unplug``, ``call``, ``set``,
``stats``) and plugs :class:`~aiotmc.sim.usbtmc_device.UsbtmcFunction` instances into
QEMU's usb-redir chardev with :class:`~testbeds.usbredir.UsbredirRunner`.

Run by hand: ``python -m tests.kernel.harness [--fetch] [--keep DIR] [-- GUEST PYTEST ARGS]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import json
import logging
import lzma
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiotmc.sim.devices import create_device
from aiotmc.sim.usbtmc_device import UsbtmcFunction
from testbeds.usbredir import UsbredirRunner

ROOT = Path(__file__).resolve().parents[2]
GUEST_MAIN = ROOT / "tests" / "kernel" / "guest_main.py"
INIT_SCRIPT = Path(__file__).with_name("init.sh")
CACHE = Path(os.environ.get("AIOTMC_KERNEL_CACHE", Path.home() / ".cache" / "aiotmc-kernel"))
RESULTS = Path(os.environ.get("AIOTMC_KERNEL_RESULTS", ROOT / ".cache" / "kernel-tier"))
MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_console", "xhci_pci", "usbtmc"]
BUSYBOX = Path("/bin/busybox")
QEMU = "qemu-system-x86_64"
ENV_TIER = "AIOTMC_KERNEL_TIER"


def log(message: str) -> None:
    sys.stderr.write(f"[kernel-tier {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# -- availability --------------------------------------------------------------------------


def tier_problem() -> str | None:
    """Why the kernel tier cannot run on this machine, or None."""
    if os.environ.get(ENV_TIER, "").strip() == "0":
        return f"{ENV_TIER}=0"
    if not sys.platform.startswith("linux"):
        return "the kernel tier needs Linux"
    if shutil.which(QEMU) is None:
        return f"{QEMU} not found (apt install qemu-system-x86)"
    if not BUSYBOX.is_file() or not _is_static_elf(BUSYBOX):
        return "a static busybox is needed at /bin/busybox (apt install busybox-static)"
    if _cached_kernel() is None:
        for tool in ("apt-get", "dpkg-deb", "depmod"):
            if shutil.which(tool) is None:
                return f"no cached kernel in {CACHE} and {tool} is missing to fetch one"
    if shutil.which("modprobe") is None or shutil.which("depmod") is None:
        return "modprobe/depmod not found (apt install kmod)"
    try:
        import usb1  # noqa: F401
    except ImportError:
        return "python-libusb1 is not installed in this environment"
    return None


def _is_static_elf(path: Path) -> bool:
    """An x86-64 ELF executable without a PT_INTERP program header (statically linked)."""
    data = path.read_bytes()
    if data[:5] != b"\x7fELF\x02":
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    kinds = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return 3 not in kinds  # PT_INTERP


def kvm_usable() -> bool:
    """KVM only when /dev/kvm opens and it is not nested PVM (which runs no stock kernel)."""
    if os.environ.get("AIOTMC_KERNEL_ACCEL") in ("tcg", "kvm"):
        return os.environ["AIOTMC_KERNEL_ACCEL"] == "kvm"
    if Path("/sys/module/kvm_pvm").exists():
        return False
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


# -- kernel ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    version: str
    tree: Path  # the unpacked package (boot/, lib/modules/<version>/)
    image: Path  # uncompressed vmlinux (PVH boot) or the bzImage

    @property
    def modules(self) -> Path:
        return self.tree / "lib" / "modules" / self.version


def _cached_kernel() -> Kernel | None:
    marker = CACHE / "current"
    if not marker.is_file():
        return None
    version = marker.read_text().strip()
    tree = CACHE / version / "tree"
    kept = CACHE / version / "modules.txt"
    if not kept.is_file() or kept.read_text().split() != MODULES:
        return None  # pruned for another module list: fetch again
    for image in (CACHE / version / "vmlinux", tree / "boot" / f"vmlinuz-{version}"):
        if image.is_file() and (tree / "lib" / "modules" / version / "modules.dep").is_file():
            return Kernel(version, tree, image)
    return None


def _run(command: list[str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def ensure_kernel() -> Kernel:
    """The cached kernel, fetching ``linux-image-amd64``'s current dependency if needed.

    ``AIOTMC_KERNEL_PACKAGE=linux-image-<ver>-amd64`` pins a version. Concurrent runs
    serialise on a lock file in the cache.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _ensure_kernel_locked()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ensure_kernel_locked() -> Kernel:
    cached = _cached_kernel()
    if cached is not None and not os.environ.get("AIOTMC_KERNEL_PACKAGE"):
        return cached
    CACHE.mkdir(parents=True, exist_ok=True)
    download = CACHE / "download"
    download.mkdir(exist_ok=True)
    package = os.environ.get("AIOTMC_KERNEL_PACKAGE")
    apt = ["apt-get", "download", "-o", "APT::Sandbox::User=root"]
    if not package:
        try:
            _run([*apt, "linux-image-amd64"], download)
        except RuntimeError as exc:
            raise RuntimeError(
                f"{exc}\n(no package lists? run `apt-get update` first, or put a kernel in "
                f"{CACHE} with `python -m tests.kernel.harness --fetch`)"
            ) from None
        meta = sorted(download.glob("linux-image-amd64_*.deb"))[-1]
        depends = _run(["dpkg-deb", "-f", str(meta), "Depends"], download)
        package = depends.split(",")[0].split()[0]
    log(f"fetching {package}")
    _run([*apt, package], download)
    deb = sorted(download.glob(f"{package}_*.deb"))[-1]
    version = package.removeprefix("linux-image-")
    target = CACHE / version
    shutil.rmtree(target, ignore_errors=True)
    tree = target / "tree"
    tree.mkdir(parents=True)
    _run(["dpkg-deb", "-x", str(deb), str(tree)], target)
    _run(["depmod", "-b", str(tree), version], target)
    bzimage = tree / "boot" / f"vmlinuz-{version}"
    image = bzimage
    with contextlib.suppress(Exception):
        image = _extract_vmlinux(bzimage, target / "vmlinux")
    for old in download.glob("*.deb"):
        old.unlink()
    _prune(Kernel(version, tree, image))
    (target / "modules.txt").write_text("\n".join(MODULES) + "\n")
    (CACHE / "current").write_text(version + "\n")
    log(f"kernel {version} cached in {target} (boot image {image.name})")
    return Kernel(version, tree, image)


def _prune(kernel: Kernel) -> None:
    """Keep only the modules the initramfs needs (the package unpacks to ~400 MB)."""
    needed = set(_modules_in_order(kernel))
    for module in (kernel.modules / "kernel").rglob("*.ko*"):
        if module not in needed:
            module.unlink()


def _extract_vmlinux(bzimage: Path, out: Path) -> Path:
    """The ELF vmlinux inside a bzImage's xz payload: QEMU boots it via PVH, ~5 s faster."""
    data = bzimage.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        raise ValueError("no xz payload")
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    elf = decompressor.decompress(data[start:])
    if elf[:4] != b"\x7fELF":
        raise ValueError("payload is not ELF")
    out.write_bytes(elf)
    return out


# -- initramfs ------------------------------------------------------------------------------


def _modules_in_order(kernel: Kernel) -> list[Path]:
    ordered: list[Path] = []
    for module in MODULES:
        command = ["modprobe", "-d", str(kernel.tree), "-S", kernel.version, "--show-depends"]
        out = _run([*command, module], ROOT)
        for line in out.splitlines():
            parts = line.split()
            if parts[:1] == ["insmod"]:
                path = Path(parts[1])
                if path not in ordered:
                    ordered.append(path)
    return ordered


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of ``(name, mode, data)`` entries (directories: mode 0o40755)."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(f"{v:08X}".encode() for v in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def build_initramfs(kernel: Kernel, out: Path) -> Path:
    """busybox + /init + the modules (in dependency order) for 9p, overlay, xHCI, usbtmc."""
    modules = _modules_in_order(kernel)
    entries: list[tuple[str, int, bytes]] = [
        ("bin", 0o40755, b""),
        ("lib", 0o40755, b""),
        ("lib/modules", 0o40755, b""),
        ("bin/busybox", 0o100755, BUSYBOX.read_bytes()),
        ("init", 0o100755, INIT_SCRIPT.read_bytes()),
        ("modules.order", 0o100644, "".join(f"{m.name}\n" for m in modules).encode()),
    ]
    entries += [(f"lib/modules/{m.name}", 0o100644, m.read_bytes()) for m in modules]
    out.write_bytes(_cpio_newc(entries))
    return out


# -- the device hub (host end of the guest's control channel) ----------------------------


@dataclass
class Plugged:
    serial: str
    function: UsbtmcFunction


@dataclass
class DeviceHub:
    """Answers the guest's JSON-line requests; plugs devices into QEMU's usb-redir socket."""

    redir_path: str
    runner: UsbredirRunner = field(default_factory=UsbredirRunner)
    plugged: Plugged | None = None
    stages: dict[str, float] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    def handle(self, request: dict[str, Any]) -> Any:
        op = request["op"]
        if op == "hello":
            self.stages.setdefault(request.get("stage", "suite"), time.monotonic())
            return {"pid": os.getpid()}
        if op == "plug":
            return self.plug(request)
        if op == "unplug":
            self.events.append("unplug")
            return self.runner.unplug()
        function = self._function()
        if op == "call":
            args = request.get("args", [])
            return self.runner.call(lambda: getattr(function, request["method"])(*args))
        if op == "set":
            return self.runner.call(lambda: setattr(function, request["attr"], request["value"]))
        if op == "stats":
            return self.runner.call(lambda: self._stats(function))
        raise ValueError(f"unknown op {op!r}")

    def _function(self) -> UsbtmcFunction:
        if self.plugged is None:
            raise RuntimeError("nothing plugged")
        return self.plugged.function

    def plug(self, request: dict[str, Any]) -> dict[str, Any]:
        self.runner.unplug()
        options = dict(request.get("options", {}))
        factory = request.get("factory")  # "module:callable" taking the options (as umockdev)
        if factory:
            module, _, name = factory.partition(":")
            function = getattr(importlib.import_module(module), name)(options)
        else:
            model = create_device(request.get("model", "dmm"), **request.get("model_options", {}))
            function = UsbtmcFunction(model, **options)
        self.runner.plug(function, self.redir_path)
        self.plugged = Plugged(function.serial, function)
        self.events.append(f"plug {function.serial}")
        return {"serial": function.serial}

    def _stats(self, function: UsbtmcFunction) -> dict[str, Any]:
        seen = function.seen
        device = self.runner.device()
        return {
            "connected": device is not None,
            "triggers": seen.triggers,
            "messages": seen.messages,
            "requests": len(seen.requests),
            "indicator_pulses": seen.indicator_pulses,
            "remote_enabled": function.remote_enabled,
            "local_lockout": function.local_lockout,
            "usbredir": dict(device.counts) if device is not None else {},
        }

    def serve(self, conn: socket.socket) -> None:
        """Serve one control connection (QEMU's virtio-serial chardev) until it closes."""
        buffer = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    if not line.strip():
                        continue
                    try:
                        reply = {"ok": True, "result": self.handle(json.loads(line))}
                    except Exception as exc:
                        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                    conn.sendall(json.dumps(reply, default=repr).encode() + b"\n")

    def close(self) -> None:
        self.runner.close()


# -- booting --------------------------------------------------------------------------------


@dataclass
class GuestRun:
    returncode: int | None
    results: Path
    console: str
    boot_s: float | None  # QEMU start -> the guest's init (PID 1) runs Python
    suite_start_s: float | None  # QEMU start -> the guest's pytest has collected
    total_s: float
    timed_out: bool
    events: list[str]

    @property
    def junit(self) -> Path:
        return self.results / "junit.xml"

    def text(self, name: str) -> str:
        path = self.results / name
        return path.read_text(errors="replace") if path.is_file() else ""


def qemu_command(kernel: Kernel, initrd: Path, work: Path, results: Path) -> list[str]:
    accel = "kvm" if kvm_usable() else "tcg"
    append = " ".join(
        [
            "console=ttyS0",
            "quiet",
            "loglevel=4",
            "panic=-1",
            "oops=panic",
            "tsc=reliable",
            "no_timer_check",
            f"AIOTMC_PYTHON={sys.executable}",
            f"AIOTMC_MAIN={GUEST_MAIN}",
            f"AIOTMC_ROOT={ROOT}",
        ]
    )
    return [
        QEMU,
        "-M",
        "q35",
        "-accel",
        accel,
        "-cpu",
        os.environ.get("AIOTMC_KERNEL_CPU") or ("max" if accel == "tcg" else "host"),
        "-smp",
        "1",
        "-m",
        "1024",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        str(kernel.image),
        "-initrd",
        str(initrd),
        "-append",
        append,
        "-chardev",
        f"file,id=con,path={work / 'console.log'}",
        "-serial",
        "chardev:con",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={results},mount_tag=results,security_model=none,multidevs=remap",
        "-device",
        "virtio-serial-pci",
        "-chardev",
        f"socket,id=ctl,path={work / 'ctl.sock'}",
        "-device",
        "virtserialport,chardev=ctl,name=aiotmc.ctl",
        "-device",
        "qemu-xhci,id=xhci",
        "-chardev",
        f"socket,id=ur,path={work / 'ur.sock'},server=on,wait=off",
        "-device",
        "usb-redir,chardev=ur,id=redir,bus=xhci.0",
    ]


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    path = Path(tempfile.mkdtemp(prefix="aiotmc-kt-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _accept(
    listener: socket.socket, process: subprocess.Popen[bytes], deadline: float
) -> socket.socket | None:
    """QEMU's connection to the control socket, or None if QEMU exits or never connects."""
    while time.monotonic() < deadline and process.poll() is None:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        return conn
    if process.poll() is None:
        process.kill()
        process.wait(10)
    return None


def boot_guest(
    guest_args: list[str], *, results: Path, timeout: float = 300.0, work: Path | None = None
) -> GuestRun:
    """Boot the guest once, run the guest suite (``guest_args`` go to its pytest), wait."""
    kernel = ensure_kernel()
    results.mkdir(parents=True, exist_ok=True)
    for old in results.iterdir():
        if old.is_file():
            old.unlink()
    with _workdir(work) as tmp:
        initrd = build_initramfs(kernel, tmp / "initramfs.cpio")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ctl_path = tmp / "ctl.sock"
        with contextlib.suppress(FileNotFoundError):
            ctl_path.unlink()
        listener.bind(str(ctl_path))
        listener.listen(1)
        listener.settimeout(0.2)
        handler = logging.FileHandler(results / "host.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        # the device models (aiotmc.sim) and the usbredir rig (testbeds.usbredir)
        device_logs = [logging.getLogger(name) for name in ("aiotmc.sim", "testbeds")]
        for device_log in device_logs:
            device_log.addHandler(handler)
            device_log.setLevel(logging.INFO)
        hub = DeviceHub(str(tmp / "ur.sock"))
        command = qemu_command(kernel, initrd, tmp, results)
        (results / "qemu-command.txt").write_text(" ".join(command) + "\n")
        (results / "guest-args.json").write_text(json.dumps(guest_args))
        started = time.monotonic()
        qemu_log = (results / "qemu.log").open("w")
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT
        )
        timed_out = False
        try:
            conn = _accept(listener, process, deadline=started + 30)
            if conn is not None:  # else QEMU failed to start: qemu.log says why
                server = threading.Thread(target=hub.serve, args=(conn,), daemon=True)
                server.start()
            try:
                process.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                timed_out = True
                process.kill()
                process.wait(10)
        except BaseException:
            process.kill()
            process.wait(10)
            raise
        finally:
            listener.close()
            hub.close()
            qemu_log.close()
            for device_log in device_logs:
                device_log.removeHandler(handler)
            handler.close()
        total = time.monotonic() - started
        console = (
            (tmp / "console.log").read_text(errors="replace")
            if (tmp / "console.log").is_file()
            else ""
        )
        (results / "console.log").write_text(console)
        stages = {name: round(at - started, 2) for name, at in hub.stages.items()}
        timing = {
            "accel": command[command.index("-accel") + 1],
            "kernel": kernel.version,
            "qemu_to_guest_init_s": stages.get("init"),
            "qemu_to_guest_suite_s": stages.get("suite"),
            "total_s": round(total, 2),
        }
        (results / "timing.json").write_text(json.dumps(timing) + "\n")
        return GuestRun(
            process.returncode,
            results,
            console,
            stages.get("init"),
            stages.get("suite"),
            total,
            timed_out,
            hub.events,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kernel.harness")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, help="keep the work dir (initramfs, sockets) here")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--fetch", action="store_true", help="only fetch and cache the kernel")
    parser.add_argument("guest_args", nargs="*", help="extra pytest arguments for the guest")
    args = parser.parse_args(argv)
    if args.fetch:
        kernel = ensure_kernel()
        log(f"kernel {kernel.version}: {kernel.image}")
        return 0
    problem = tier_problem()
    if problem:
        log(f"cannot run: {problem}")
        return 2
    run = boot_guest(args.guest_args, results=args.results, timeout=args.timeout, work=args.keep)
    sys.stdout.write(run.console[-20000:])
    summary = run.text("summary.json")
    log(
        f"boot {run.boot_s} s, suite start {run.suite_start_s} s, total {run.total_s:.1f} s, "
        f"timed out: {run.timed_out}, summary: {summary.strip()}"
    )
    return 0 if summary and json.loads(summary).get("exitstatus") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
