"""`gdbstub serve`: start the daemon with a guest image (the embedded demo guest by default)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import trio

from backends.api import GUESTDBG_VALID_MASK
from backends.elf import Image, ImageError, load_image
from gdbstub.logfmt import LEVELS, Quoted, ReopenableFileHandler, kv, setup_logging
from gdbstub.transcript import Recorder

log = logging.getLogger("gdbstub")


def demo_image_path() -> Path:
    """The demo guest shipped as package data."""
    return Path(str(resources.files("gdbstub") / "data" / "demo.elf"))


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = units.get(t[-1:], 1)
    if t[-1:] in units:
        t = t[:-1]
    try:
        value = int(t, 0) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 128M, 1G, 0x8000000)") from None
    if value <= 0 or value % 4096 or value > 3 << 30:
        raise argparse.ArgumentTypeError(f"RAM size {text} must be a multiple of 4 KiB, at most 3 GiB")
    return value


def _bounded(lo: int, hi: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer from lo to hi."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = lo - 1
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{text!r}: {what} from {lo} to {hi} is needed")
        return n

    return parse


_count = _bounded(2, 16, "a count")
_cpus = _bounded(1, 8, "a vCPU count")


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    try:
        p = int(port)
        if not 0 <= p <= 65535:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {text!r}") from None
    return host.strip("[]") or "127.0.0.1", p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gdbstub", description="GDB remote stub for arm64 virtual machines")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the stub server with a guest")
    serve.add_argument("image", nargs="?", help="aarch64 ELF guest image (default: the embedded demo guest)")
    where = serve.add_mutually_exclusive_group()
    where.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 1234),
        metavar="HOST:PORT",
        help="TCP address to listen on (default 127.0.0.1:1234; port 0 picks a free one)",
    )
    where.add_argument("--unix", metavar="PATH", help="listen on a unix socket instead of TCP")
    serve.add_argument(
        "--backend",
        choices=["sim", "kvm"],
        default="sim",
        help="the hypervisor core: sim (simulated arm64, default) or kvm (this host's /dev/kvm; needs IMAGE)",
    )
    serve.add_argument("--ram-size", type=_size, default=128 << 20, help="guest RAM at 0x40000000 (default 128M)")
    serve.add_argument("--brps", type=_count, default=6, help="simulated hardware breakpoints (2..16, default 6)")
    serve.add_argument("--wrps", type=_count, default=4, help="simulated hardware watchpoints (2..16, default 4)")
    serve.add_argument(
        "--cpus",
        type=_cpus,
        default=1,
        help="vCPUs (1..8, default 1), each a gdb thread; vCPU 0 starts, the guest starts the others (PSCI CPU_ON)",
    )
    serve.add_argument(
        "--far-policy",
        choices=["watched", "lowest", "lowest16"],
        default="watched",
        help="which address the simulated core reports in FAR on a watchpoint hit",
    )
    serve.add_argument(
        "--guestdbg-mask",
        type=lambda s: int(s, 0),
        default=GUESTDBG_VALID_MASK,
        help="KVM_GUESTDBG_* control bits the simulated core accepts (default 0x30003, as arm64 KVM)",
    )
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="accept a --listen address that is not loopback (a gdb client gets full control of the guest)",
    )
    serve.add_argument("--log-level", default="info", choices=LEVELS, help="least severe log lines kept")
    serve.add_argument("--log-file", metavar="PATH", help="append the log here instead of stderr (SIGHUP reopens it)")
    serve.add_argument("--pidfile", metavar="PATH", help="write the server's pid here; refuse if it names a live one")
    serve.add_argument("--daemon", action="store_true", help="detach into the background (needs --log-file)")
    serve.add_argument("--record", metavar="DIR", help="write a transcript of every connection to DIR (for replay)")
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return serve(args)


def _fail(message: str) -> int:
    print(f"gdbstub: error: {message}", file=sys.stderr)
    return 2


def serve(args: argparse.Namespace) -> int:
    """Check everything a user can get wrong while the terminal is still there, then serve (maybe detached).

    SIGTERM/SIGINT/SIGHUP stay blocked until the event loop owns them: a signal during start-up is then a
    clean shutdown instead of killing us between writing the pidfile and serving."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        return _serve(args, old_mask)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _serve(args: argparse.Namespace, old_mask: set[int | signal.Signals]) -> int:
    from backends.api import Backend, BackendError
    from gdbstub import daemon
    from gdbstub.machine import Machine
    from gdbstub.server import Server
    from gdbstub.target import Target

    if args.daemon and not args.log_file:
        return _fail("--daemon needs --log-file: a daemon has no terminal to log to")
    if args.backend == "kvm":
        refusal = _kvm_refusal(args)
        if refusal:
            return _fail(refusal)
    if not args.unix:
        refusal = _remote_refusal(args.listen[0], args.allow_remote)
        if refusal:
            return _fail(refusal)
    # Absolute paths: a daemon works from /, and the cleanup at exit must find the same files.
    pidfile = Path(os.path.abspath(args.pidfile)) if args.pidfile else None
    log_file = os.path.abspath(args.log_file) if args.log_file else None
    unix_path = os.path.abspath(args.unix) if args.unix else None
    if pidfile is not None:
        try:
            daemon.check_pidfile(pidfile)
        except daemon.PidfileError as e:
            return _fail(str(e))
    try:
        handler = setup_logging(args.log_level, log_file)
    except OSError as e:
        return _fail(f"cannot open log file {log_file}: {e.strerror or e}")

    path = Path(args.image) if args.image else demo_image_path()
    try:
        image = load_image(path) if args.backend == "sim" else _load_kvm_image(path)
    except ImageError as e:
        return _fail(str(e))

    uart = logging.getLogger("gdbstub.guest")
    console_line = bytearray()

    def console(data: bytes) -> None:
        console_line.extend(data)
        if data == b"\n" or len(console_line) > 256:
            uart.info(kv("uart", text=Quoted(console_line.decode(errors="replace").rstrip("\n"))))
            console_line.clear()

    backend: Backend
    try:
        if args.backend == "kvm":
            from backends.kvm import open_backend

            backend = open_backend(image, args.ram_size, console, cpus=args.cpus)
        else:
            from backends.sim import FarPolicy, SimBackend  # unicorn: only the simulated core needs it

            backend = SimBackend(
                image,
                ram_size=args.ram_size,
                brps=args.brps,
                wrps=args.wrps,
                far_policy=FarPolicy(args.far_policy),
                console=console,
                guest_debug_flags=args.guestdbg_mask,
                cpus=args.cpus,
            )
    except (BackendError, ImageError) as e:
        return _fail(str(e))
    target = Machine(backend) if backend.capabilities().vcpus > 1 else Target(backend)
    if args.record:
        args.record = os.path.abspath(args.record)  # a daemon works from /
    try:
        recorder = _recorder(args, image)  # before detaching: relative paths, and errors on the terminal
    except OSError as e:
        return _fail(f"cannot record to {args.record}: {e.strerror or e}")
    try:
        listeners = _listeners(args)
    except OSError as e:
        where = args.unix or f"{args.listen[0]}:{args.listen[1]}"
        tcp_busy = e.errno == errno.EADDRINUSE and not args.unix
        reason = "address already in use" if tcp_busy else (e.strerror or str(e))
        return _fail(f"cannot listen on {where}: {reason}")

    addr = listeners[0].socket.getsockname()
    if isinstance(addr, tuple):
        where = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"  # gdb's IPv6 form
    else:
        where = args.unix
    banner = [
        f"gdbstub: listening on {where}",
        f"gdbstub: guest image {image.path} ({image.machine}, entry {image.entry:#x}), halted at entry",
        f"gdbstub: attach with: gdb-multiarch {image.path} -ex 'target remote {where}'",
    ]
    readiness: daemon.Readiness | None = None
    if args.daemon:
        keep = [ln.socket.fileno() for ln in listeners]
        if isinstance(handler, ReopenableFileHandler) and handler.stream is not None:
            keep.append(handler.stream.fileno())
        detached = daemon.detach(keep)
        if isinstance(detached, int):  # the original process: the daemon serves, or said why not
            if detached == 0:
                print("\n".join(banner), flush=True)
                print(f"gdbstub: running as a daemon (pidfile {pidfile or 'none'}, log {log_file})", flush=True)
            else:
                _remove_unix_socket(unix_path)
            return detached
        readiness = detached

    def on_ready() -> str | None:
        if pidfile is not None:
            try:
                daemon.write_pidfile(pidfile)
            except OSError as e:
                return f"cannot write pidfile {pidfile}: {e.strerror or e}"
        log.info(kv("start", pid=os.getpid(), listen=where, image=str(image.path), daemon=bool(args.daemon)))
        if args.allow_remote and not args.unix and _remote_refusal(args.listen[0], False):
            log.warning(kv("remote", listen=where, note="not loopback: any peer that reaches it controls the guest"))
        if readiness is not None:
            readiness.ready()
        else:
            print("\n".join(banner), flush=True)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        return None

    server = Server(target, recorder=recorder)
    reopen = handler.reopen if isinstance(handler, ReopenableFileHandler) else None
    code = 0
    try:
        error = trio.run(lambda: daemon.run(server, listeners, on_ready=on_ready, reopen_log=reopen))
        if error is not None:
            code = 2
            if readiness is not None:
                readiness.failed(error)
            else:
                _fail(error)
    except BaseException as e:
        log.error(kv("error", error=f"{type(e).__name__}: {e}"))
        if readiness is not None:
            readiness.failed(f"{type(e).__name__}: {e} (see the log file)")
        raise
    finally:
        if pidfile is not None:
            daemon.remove_pidfile(pidfile)
        _remove_unix_socket(unix_path)
    log.info(kv("exit", code=code))
    return code


_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def _kvm_refusal(args: argparse.Namespace) -> str | None:
    """What --backend kvm cannot do: the embedded demo is an arm64 image, the BRP/WRP/FAR options shape
    only the simulated core, and a KVM VM belongs to the process that created it (a daemon forks after)."""
    if not args.image:
        return "--backend kvm needs an IMAGE for this host's architecture (e.g. guests/build/x86/demo.elf)"
    if (args.brps, args.wrps, args.far_policy, args.guestdbg_mask) != (6, 4, "watched", GUESTDBG_VALID_MASK):
        return (
            "--brps, --wrps, --far-policy and --guestdbg-mask configure the simulated core; "
            "they do not apply to --backend kvm"
        )
    if args.daemon:
        return "--daemon is not supported with --backend kvm yet (the VM cannot move to the forked daemon)"
    return None


def _load_kvm_image(path: Path) -> Image:
    """The guest image for KVM: it runs this host's instruction set (aarch64 or x86-64)."""
    import platform

    machine = "aarch64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"
    return load_image(path, machine)


def _remove_unix_socket(path: str | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _remote_refusal(host: str, allow_remote: bool) -> str | None:
    """Why --listen HOST is refused (None if it is loopback, or --allow-remote accepts it): a gdbstub
    hands whoever connects full control of the guest, so only local clients are accepted by default."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as e:
        return f"cannot listen on {host}: {e.strerror or e}"
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_loopback and not allow_remote:
            return (f"refusing to listen on {host}: not a loopback address, and a gdb client gets full control "
                    f"of the guest (add --allow-remote to accept remote clients)")  # fmt: skip
    return None


_NOT_RECORDED = {"--listen": 1, "--unix": 1, "--record": 1, "--log-level": 1, "--log-file": 1, "--pidfile": 1,
                 "--daemon": 0, "--allow-remote": 0}  # fmt: skip


def _recorder(args: argparse.Namespace, image: Image) -> Recorder | None:
    """A transcript writer when --record is given: it notes the options a replay must start with."""
    if not args.record:
        return None
    argv = list(args.argv)
    options: list[str] = []
    i = argv.index("serve") + 1 if "serve" in argv else 0
    while i < len(argv):
        name = argv[i].split("=", 1)[0]
        if name in _NOT_RECORDED:
            i += 1 + (_NOT_RECORDED[name] if "=" not in argv[i] else 0)
            continue
        options.append(argv[i])
        i += 1
    try:
        shown = str(image.path.resolve().relative_to(Path.cwd()))
    except ValueError:
        shown = str(image.path)
    return Recorder(Path(args.record), options, shown, image.sha256)


def _listeners(args: argparse.Namespace) -> list[trio.SocketListener]:
    if args.unix:
        path = Path(args.unix)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise OSError(errno.EEXIST, "a file that is not a socket is in the way (left untouched)")
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(path))
                raise OSError(errno.EADDRINUSE, "a server is already listening there")
            except ConnectionRefusedError:
                path.unlink()  # a stale socket left by a dead server
            finally:
                probe.close()
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            raw.bind(str(path))
        finally:
            os.umask(old)
        raw.listen(1)
        return [trio.SocketListener(trio.socket.from_stdlib_socket(raw))]
    host, port = args.listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    raw = socket.socket(family, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        raw.bind((host, port))
    except OSError:
        raw.close()
        raise
    raw.listen(4)
    return [trio.SocketListener(trio.socket.from_stdlib_socket(raw))]
