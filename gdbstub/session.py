"""Per-connection protocol state and the packet dispatch table.

One table (``Session.TABLE``) lists every packet we answer; each handler is
small.  A handler returns the reply payload, or a Resume request that the
server carries out on a worker thread (the stop reply comes later, from
stop_reply()).  Handlers never raise: bad input gets an ``E NN`` reply and
changes nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from backends.api import BackendError
from gdbstub.logfmt import kv
from gdbstub.rsp import Connection
from gdbstub.slots import GdbPoint, PointKind
from gdbstub.target import StopEvent, StopKind, Target, TargetError

log = logging.getLogger("gdbstub.session")

THREAD_ID = 1  # one vCPU = gdb thread 1 (0 means "any", -1 "all")
_NAME = re.compile(rb"[qQv][A-Za-z]+\??")
_HEX_DIGITS = re.compile(rb"[0-9a-fA-F]*")
_G_DIGITS = re.compile(rb"[0-9a-fA-Fx]*")  # G may mark a register unchanged with 'xx'


class HexData(bytes):
    """A reply that is hex digits only (memory, registers): the server may run-length encode it."""


# Memory reads at least this long go out run-length encoded (zero-filled memory shrinks ~30x; gdb
# decodes it): what dumps read (PacketSize / 2 bytes at a time).  Smaller replies gain little from it.
RLE_MIN_BYTES = 1024


@dataclass(frozen=True)
class Resume:
    step: bool


class Detach:
    """The client detached (D): reply sent; the server lets the guest run on."""


class Kill:
    """The client sent k: the server closes the connection; the guest stays."""


Reply = bytes | Resume | Detach | Kill | None
Handler = Callable[["Session", bytes], Reply]

# Errors are `E` + the errno as two decimal digits, as QEMU's gdbstub answers (E14 bad address,
# E22 bad request, E28 no slot left); gdb shows its own message whatever the number.
E_INVAL = b"E22"


def _err(errno: int) -> bytes:
    return b"E%02d" % (errno % 100)


def _hex(text: bytes) -> int:
    """1..16 hex digits and nothing else (int() would also take a sign, 0x, '_' and spaces)."""
    if not text or len(text) > 16 or not _HEX_DIGITS.fullmatch(text):
        raise ValueError("bad hex number")
    return int(text, 16)


def _hex_text(text: bytes, allowed: re.Pattern[bytes] = _HEX_DIGITS) -> str:
    """Hex data checked digit by digit (bytes.fromhex would skip spaces)."""
    if not allowed.fullmatch(text):
        raise ValueError("bad hex data")
    return text.decode()


def _parse_thread(text: bytes) -> int:
    """A gdb thread-id, with or without the multiprocess p<pid>. prefix."""
    if text.startswith(b"p"):
        text = text.split(b".", 1)[1] if b"." in text else b"-1"
    if text == b"-1":
        return -1
    return _hex(text)


class Session:
    def __init__(self, target: Target, conn: Connection, monitor: Callable[[str], str] | None = None) -> None:
        self.target = target
        self.conn = conn
        self.monitor = monitor
        self.gdb_features: set[bytes] = set()
        self.detached = False
        self._g_cache: tuple[int, bytes] = (-1, b"")  # (target.regs_version, the `g` reply for it)
        arch = target.arch
        # per expedited register: its `NN:` prefix, name, byte size and mask, for stop replies
        self._expedite = [(b"%x:" % num, arch.REGISTERS[num].name, arch.REGISTERS[num].bits // 8,
                           (1 << arch.REGISTERS[num].bits) - 1) for num in arch.EXPEDITED]  # fmt: skip

    # ---- dispatch -------------------------------------------------------------------------------
    def handle(self, data: bytes) -> Reply:
        """One packet in; the reply payload (or an action) out."""
        if not data:
            return b""
        m = _NAME.match(data) if data[:1] in b"qQv" else None
        name = m.group(0) if m else data[:1]
        handler = self.TABLE.get(name)
        if handler is None:
            return b""
        args = data[len(name) :]
        try:
            return handler(self, args)
        except TargetError as e:
            log.info(kv("refused", packet=data[:40], error=str(e)))
            return _err(e.errno)
        except BackendError as e:  # the hypervisor refused (an ioctl failing): the packet fails, the server lives
            log.warning(kv("error", packet=data[:40], error=str(e), where="backend"))
            return _err(5)
        except (ValueError, IndexError, KeyError, OverflowError) as e:
            log.info(kv("malformed", packet=data[:40], error=str(e)))
            return E_INVAL
        except Exception as e:  # a bug of ours: the packet fails with EIO, the session and the guest live on
            log.error(kv("error", packet=data[:40], error=f"{type(e).__name__}: {e}", where="handler"), exc_info=True)
            return _err(5)

    # ---- connection set-up ---------------------------------------------------------------------
    def q_supported(self, args: bytes) -> Reply:
        self.gdb_features = {f for f in args.lstrip(b":").split(b";") if f.endswith(b"+")}
        caps = self.target.caps
        features = [b"PacketSize=%x" % self.conn.max_packet, b"QStartNoAckMode+", b"qXfer:features:read+",
                    b"vContSupported+"]  # fmt: skip
        if caps.vcpus > 1:
            features.append(b"qXfer:threads:read+")
        if caps.sw_breakpoints:
            features.append(b"swbreak+")
        if caps.hw_breakpoints:
            features.append(b"hwbreak+")
        return b";".join(features)

    def start_no_ack(self, args: bytes) -> Reply:
        self.conn.send(b"OK")
        self.conn.start_no_ack()
        return None

    def must_reply_empty(self, args: bytes) -> Reply:
        return b""

    def q_xfer(self, args: bytes) -> Reply:
        parts = args.split(b":")
        if len(parts) != 5 or parts[1] not in (b"features", b"threads") or parts[2] != b"read":
            return b""
        if parts[1] == b"threads" and parts[3] == b"":
            doc = self._threads_xml()
        elif parts[1] == b"features" and parts[3] == b"target.xml":
            doc = self.target.arch.target_xml()
        else:
            return b"E00"
        off_s, _, len_s = parts[4].partition(b",")
        offset, length = _hex(off_s), _hex(len_s)
        if offset > len(doc):
            return b"E00"
        length = min(length, self.conn.max_packet - 1)
        chunk = doc[offset : offset + length]
        return (b"l" if offset + len(chunk) >= len(doc) else b"m") + chunk

    def q_attached(self, args: bytes) -> Reply:
        return b"1"

    def q_offsets(self, args: bytes) -> Reply:
        return b"Text=0;Data=0;Bss=0"

    # ---- threads: gdb thread N is vCPU N - 1 ------------------------------------------------------
    def _vcpu_of(self, tid: int) -> int | None:
        """The vCPU a thread id names, None for "any"/"all" (0, -1); ValueError for no such thread."""
        if tid in (0, -1):
            return None
        if not THREAD_ID <= tid < THREAD_ID + self.target.caps.vcpus:
            raise ValueError(f"no thread {tid}")
        return tid - THREAD_ID

    def _threads_xml(self) -> bytes:
        rows = [
            b'<thread id="%x" core="%d" name="CPU#%d"/>' % (k + THREAD_ID, k, k) for k in range(self.target.caps.vcpus)
        ]
        return b'<?xml version="1.0"?>\n<threads>' + b"".join(rows) + b"</threads>"

    def q_f_thread_info(self, args: bytes) -> Reply:
        return b"m" + b",".join(b"%x" % (k + THREAD_ID) for k in range(self.target.caps.vcpus))

    def q_s_thread_info(self, args: bytes) -> Reply:
        return b"l"

    def q_current_thread(self, args: bytes) -> Reply:
        return b"QC%x" % (self.target.vcpu + THREAD_ID)

    def q_thread_extra_info(self, args: bytes) -> Reply:
        vcpu = self._vcpu_of(_parse_thread(args.lstrip(b",")))
        return (b"CPU#%d" % (vcpu or 0)).hex().encode()

    def set_thread(self, args: bytes) -> Reply:
        if args[:1] not in (b"g", b"c"):
            return E_INVAL
        vcpu = self._vcpu_of(_parse_thread(args[1:]))
        if args[:1] == b"c":
            self.target.cont_vcpu = vcpu
        elif vcpu is not None and vcpu != self.target.vcpu:
            self.target.vcpu = vcpu
        return b"OK"

    def thread_alive(self, args: bytes) -> Reply:
        self._vcpu_of(_parse_thread(args))
        return b"OK"

    def q_rcmd(self, args: bytes) -> Reply:
        command = bytes.fromhex(args.lstrip(b",").decode()).decode(errors="replace").strip()
        if self.monitor is None:
            return b""
        text = self.monitor(command)
        if text:
            if not text.endswith("\n"):
                text += "\n"
            for i in range(0, len(text), 512):  # console output in O packets, then the final OK
                self.conn.send(b"O" + text[i : i + 512].encode().hex().encode())
        return b"OK"

    # ---- registers -----------------------------------------------------------------------------
    def read_all(self, args: bytes) -> Reply:
        version, reply = self._g_cache
        if version != self.target.regs_version:  # unchanged since the last `g` (gdb flushed its cache)
            reply = self.target.arch.encode_g(self.target.read_registers()).encode()
            self._g_cache = (self.target.regs_version, reply)
        return reply

    def write_all(self, args: bytes) -> Reply:
        self.target.write_registers(self.target.arch.decode_g(_hex_text(args, _G_DIGITS)))
        return b"OK"

    def read_one(self, args: bytes) -> Reply:
        num = _hex(args)
        if num >= len(self.target.arch.REGISTERS):
            return E_INVAL
        arch = self.target.arch
        return arch.encode_reg(num, self.target.read_register(arch.REGISTERS[num].name)).encode()

    def write_one(self, args: bytes) -> Reply:
        num_s, _, val = args.partition(b"=")
        num = _hex(num_s)
        if num >= len(self.target.arch.REGISTERS):
            return E_INVAL
        arch = self.target.arch
        self.target.write_registers({arch.REGISTERS[num].name: arch.decode_reg(num, _hex_text(val))})
        return b"OK"

    # ---- memory --------------------------------------------------------------------------------
    def _addr_len(self, text: bytes) -> tuple[int, int]:
        a, _, n = text.partition(b",")
        addr, length = _hex(a), _hex(n)
        if addr + length > 1 << 64:
            raise TargetError("range wraps past the end of the address space", 14)
        return addr, length

    def read_mem(self, args: bytes) -> Reply:
        addr, length = self._addr_len(args)
        length = min(length, self.conn.max_packet // 2)  # a short read is allowed; gdb asks again
        data = self.target.read_memory(addr, length).hex().encode()
        return HexData(data) if length >= RLE_MIN_BYTES else data

    def write_mem(self, args: bytes) -> Reply:
        head, sep, data = args.partition(b":")
        if not sep:
            return E_INVAL
        addr, length = self._addr_len(head)
        payload = bytes.fromhex(_hex_text(data))
        if len(payload) != length:
            return E_INVAL
        self.target.write_memory(addr, payload)
        return b"OK"

    def write_mem_binary(self, args: bytes) -> Reply:
        head, sep, data = args.partition(b":")
        if not sep:
            return E_INVAL
        addr, length = self._addr_len(head)
        if len(data) != length:
            return E_INVAL
        if length:
            self.target.write_memory(addr, data)
        return b"OK"

    # ---- breakpoints ---------------------------------------------------------------------------
    def _point(self, args: bytes) -> tuple[int, int, int]:
        fields = args.split(b";", 1)[0].split(b",")
        if len(fields) != 3:
            raise ValueError("Z/z needs type,addr,kind")
        return _hex(fields[0]), _hex(fields[1]), _hex(fields[2])

    def insert_point(self, args: bytes) -> Reply:
        return self._z(args, insert=True)

    def remove_point(self, args: bytes) -> Reply:
        return self._z(args, insert=False)

    def _z(self, args: bytes, insert: bool) -> Reply:
        ztype, addr, kind = self._point(args)
        caps = self.target.caps
        if ztype == 0:
            if not caps.sw_breakpoints:
                return b""
            if insert:
                self.target.insert_sw_breakpoint(addr, kind)
            else:
                self.target.remove_sw_breakpoint(addr, kind)
            return b"OK"
        if ztype not in (1, 2, 3, 4):
            return b""
        if (ztype == 1 and not caps.hw_breakpoints) or (ztype > 1 and not caps.hw_watchpoints):
            return b""
        if ztype == 3 and not self.target.arch.READ_WATCHPOINTS:
            return b""  # e.g. x86 has no read-only data breakpoint: gdb then uses Z4 and drops the writes itself
        point = GdbPoint(PointKind(ztype), addr, kind)
        if insert:
            self.target.insert_hw_point(point)
        else:
            self.target.remove_hw_point(point)
        return b"OK"

    # ---- run control ---------------------------------------------------------------------------
    def query_stop(self, args: bytes) -> Reply:
        return self.stop_reply(self.target.last_stop)

    def _set_pc(self, text: bytes) -> None:
        if text:
            self.target.write_registers({self.target.arch.PC: _hex(text)})

    def cont(self, args: bytes) -> Reply:
        self._set_pc(args)
        return Resume(step=False)

    def step(self, args: bytes) -> Reply:
        self._set_pc(args)
        return Resume(step=True)

    def cont_signal(self, args: bytes) -> Reply:
        sig, _, addr = args.partition(b";")
        _hex(sig)  # checked, then dropped: a VM has no signals to deliver
        self._set_pc(addr)
        return Resume(step=False)

    def step_signal(self, args: bytes) -> Reply:
        sig, _, addr = args.partition(b";")
        _hex(sig)
        self._set_pc(addr)
        return Resume(step=True)

    def v_cont_query(self, args: bytes) -> Reply:
        return b"vCont;c;C;s;S"

    def v_cont(self, args: bytes) -> Reply:
        """Each vCPU takes the first action naming it (or naming no thread); one without any stays stopped
        (`set scheduler-locking step`: `vCont;s:2` steps vCPU 1 alone).  Threads that do not exist are
        ignored, as gdb may name a thread that just went away."""
        n = self.target.caps.vcpus
        actions: dict[int, bytes] = {}
        for action in args.lstrip(b";").split(b";"):
            verb, _, tid = action.partition(b":")
            kind = verb[:1]
            if kind not in (b"c", b"C", b"s", b"S", b"t"):
                return E_INVAL
            named = _parse_thread(tid) if tid else 0
            vcpus = range(n) if named in (0, -1) else [named - THREAD_ID] if 0 <= named - THREAD_ID < n else []
            for k in vcpus:
                actions.setdefault(k, kind.lower())
        run = frozenset(k for k, a in actions.items() if a != b"t")
        if not run:
            return b"OK" if actions else E_INVAL  # `t` only: already stopped
        steps = sorted(k for k, a in actions.items() if a == b"s")
        self.target.plan_resume(None if len(run) == n else run, steps[0] if steps else None)
        return Resume(step=bool(steps))

    def detach(self, args: bytes) -> Reply:
        self.conn.send(b"OK")
        self.detached = True
        return Detach()

    def kill(self, args: bytes) -> Reply:
        return Kill()

    def v_kill(self, args: bytes) -> Reply:
        self.conn.send(b"OK")
        return Kill()

    # ---- stop replies --------------------------------------------------------------------------
    def stop_reply(self, stop: StopEvent) -> bytes:
        if stop.kind is StopKind.EXITED:
            return b"W%02x" % (stop.status & 0xFF)
        parts = [b"T%02x" % stop.signal]
        if stop.kind in (StopKind.WATCH, StopKind.RWATCH, StopKind.AWATCH):
            parts.append(b"%s:%x;" % (stop.kind.value.encode(), stop.addr))
        elif stop.kind is StopKind.HWBREAK and b"hwbreak+" in self.gdb_features:
            parts.append(b"hwbreak:;")
        elif stop.kind is StopKind.SWBREAK and b"swbreak+" in self.gdb_features:
            parts.append(b"swbreak:;")
        parts.append(b"thread:%x;core:%x;" % (stop.vcpu + THREAD_ID, stop.vcpu))
        read = self.target.read_register  # a few single reads cost less than all registers at once
        for prefix, name, size, mask in self._expedite:
            parts += (prefix, (read(name) & mask).to_bytes(size, "little").hex().encode(), b";")
        return b"".join(parts)

    TABLE: dict[bytes, Handler] = {
        b"qSupported": q_supported,
        b"QStartNoAckMode": start_no_ack,
        b"vMustReplyEmpty": must_reply_empty,
        b"qXfer": q_xfer,
        b"qAttached": q_attached,
        b"qOffsets": q_offsets,
        b"qfThreadInfo": q_f_thread_info,
        b"qThreadExtraInfo": q_thread_extra_info,
        b"qsThreadInfo": q_s_thread_info,
        b"qC": q_current_thread,
        b"H": set_thread,
        b"T": thread_alive,
        b"qRcmd": q_rcmd,
        b"?": query_stop,
        b"g": read_all,
        b"G": write_all,
        b"p": read_one,
        b"P": write_one,
        b"m": read_mem,
        b"M": write_mem,
        b"X": write_mem_binary,
        b"Z": insert_point,
        b"z": remove_point,
        b"c": cont,
        b"s": step,
        b"C": cont_signal,
        b"S": step_signal,
        b"vCont?": v_cont_query,
        b"vCont": v_cont,
        b"D": detach,
        b"k": kill,
        b"vKill": v_kill,
    }
