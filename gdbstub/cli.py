"""`gdbstub serve`: start the daemon with a guest image (the embedded demo guest by default)."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import stat
import sys
from importlib import resources
from pathlib import Path

import trio

from backends.elf import ImageError, load_image

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


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 2 <= n <= 16:
        raise argparse.ArgumentTypeError(f"{text!r}: a count from 2 to 16 is needed")
    return n


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
    serve.add_argument("--backend", choices=["sim"], default="sim", help="the hypervisor core (default: sim)")
    serve.add_argument("--ram-size", type=_size, default=128 << 20, help="guest RAM at 0x40000000 (default 128M)")
    serve.add_argument("--brps", type=_count, default=6, help="simulated hardware breakpoints (2..16, default 6)")
    serve.add_argument("--wrps", type=_count, default=4, help="simulated hardware watchpoints (2..16, default 4)")
    serve.add_argument(
        "--far-policy",
        choices=["watched", "lowest", "lowest16"],
        default="watched",
        help="which address the simulated core reports in FAR on a watchpoint hit",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return serve(args)


def _fail(message: str) -> int:
    print(f"gdbstub: error: {message}", file=sys.stderr)
    return 2


def serve(args: argparse.Namespace) -> int:
    from backends.api import BackendError
    from backends.sim import FarPolicy, SimBackend
    from gdbstub.server import Server
    from gdbstub.target import Target

    path = Path(args.image) if args.image else demo_image_path()
    try:
        image = load_image(path)
    except ImageError as e:
        return _fail(str(e))

    console_line = bytearray()

    def console(data: bytes) -> None:
        console_line.extend(data)
        if data == b"\n" or len(console_line) > 256:
            logging.getLogger("gdbstub.guest").info("uart: %s", console_line.decode(errors="replace").rstrip("\n"))
            console_line.clear()

    try:
        backend = SimBackend(
            image,
            ram_size=args.ram_size,
            brps=args.brps,
            wrps=args.wrps,
            far_policy=FarPolicy(args.far_policy),
            console=console,
        )
    except BackendError as e:
        return _fail(str(e))
    target = Target(backend)
    try:
        listeners = _listeners(args)
    except OSError as e:
        where = args.unix or f"{args.listen[0]}:{args.listen[1]}"
        reason = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        return _fail(f"cannot listen on {where}: {reason}")

    sock = listeners[0].socket
    addr = sock.getsockname()
    where = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else args.unix
    print(f"gdbstub: listening on {where}", flush=True)
    print(f"gdbstub: guest image {image.path} (aarch64, entry {image.entry:#x}), halted at entry", flush=True)
    target_arg = where if isinstance(addr, tuple) else args.unix
    print(f"gdbstub: attach with: gdb-multiarch {image.path} -ex 'target remote {target_arg}'", flush=True)
    try:
        trio.run(Server(target).serve, listeners)
    except KeyboardInterrupt:
        print("gdbstub: stopped", file=sys.stderr)
    finally:
        if args.unix:
            try:
                os.unlink(args.unix)
            except OSError:
                pass
    return 0


def _listeners(args: argparse.Namespace) -> list[trio.SocketListener]:
    if args.unix:
        path = Path(args.unix)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
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
