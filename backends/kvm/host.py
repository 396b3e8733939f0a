"""/dev/kvm plumbing shared by the KVM backends: opening it with the host checks, ioctls whose errors
become BackendError, and the signal that kicks a vCPU thread out of KVM_RUN.

Kicking: KVM_RUN only returns early for a pending signal, and checks kvm_run.immediate_exit only on entry,
so kick(vcpu) sets that vCPU's immediate_exit (covers a thread about to enter KVM_RUN) and sends
KICK_SIGNAL to the one thread inside that vCPU's run(): each vCPU records the thread running it, so a
kick interrupts exactly that vCPU and no other (a VM with several vCPUs runs each on its own thread).
The signal needs a handler (a default-ignored or SIG_DFL signal would be dropped or kill the process);
Python can install one only from the main thread, so backends install it when they are created.  KVM
returns -EINTR and CPython's fcntl.ioctl does not retry it (PEP 475 retries are for calls like read();
ioctl is not among them), so KVM_RUN raises InterruptedError.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import signal
import threading
from types import FrameType
from typing import Generic, TypeVar

from backends.api import BackendError, ConsoleSink, Exit
from backends.kvm import uapi
from backends.kvm.layout import Codec

KVM_PATH = "/dev/kvm"
KICK_SIGNAL = signal.SIGUSR1
MAX_VCPUS = 8  # what the backends offer (cpus=1..8); KVM itself allows more

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
_libc.ioctl.restype = ctypes.c_int


class KvmIoctlError(BackendError):
    """An ioctl KVM refused; ``errno`` says how (EINVAL, E2BIG, ...)."""

    def __init__(self, what: str, err: int) -> None:
        super().__init__(f"{what}: {os.strerror(err)} ({errno.errorcode.get(err, '?')})")
        self.errno = err


def _error(what: str, e: OSError) -> KvmIoctlError:
    return KvmIoctlError(what, e.errno or errno.EIO)


def ioctl_int(fd: int, request: int, arg: int = 0, *, what: str) -> int:
    """An ioctl with an integer argument (fits a C int) returning its result."""
    try:
        return fcntl.ioctl(fd, request, arg)
    except OSError as e:
        raise _error(what, e) from None


def ioctl_ulong(fd: int, request: int, arg: int, *, what: str) -> int:
    """An ioctl whose argument is an unsigned long (fcntl.ioctl only passes a C int)."""
    ret = int(_libc.ioctl(fd, request, arg))
    if ret < 0:
        err = ctypes.get_errno()
        raise _error(what, OSError(err, os.strerror(err)))
    return ret


def ioctl_in(fd: int, request: int, data: bytes, *, what: str) -> None:
    """An ioctl that reads a struct from us (the _IOW ones)."""
    buf = bytearray(data)
    try:
        fcntl.ioctl(fd, request, buf, True)
    except OSError as e:
        raise _error(what, e) from None


def ioctl_out(fd: int, request: int, buf: bytearray, *, what: str) -> int:
    """An ioctl that fills (or reads and fills) ``buf`` in place."""
    try:
        return int(fcntl.ioctl(fd, request, buf, True))
    except OSError as e:
        raise _error(what, e) from None


def open_kvm(path: str = KVM_PATH) -> int:
    """The system fd, after the checks a debugger backend needs; each failure is one line."""
    if not os.path.exists(path):
        raise BackendError(
            f"{path} does not exist: this host has no KVM (load kvm_intel/kvm_amd or enable nested virtualization)"
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except PermissionError:
        raise BackendError(f"{path}: permission denied (run as root or join the group that owns it)") from None
    except OSError as e:
        raise _error(f"cannot open {path}", e) from None
    try:
        version = ioctl_int(fd, uapi.KVM_GET_API_VERSION, what="KVM_GET_API_VERSION")
        if version != uapi.KVM_API_VERSION:
            raise BackendError(f"{path}: KVM API version {version}, this backend speaks {uapi.KVM_API_VERSION}")
        checks = {
            uapi.KVM_CAP_SET_GUEST_DEBUG: "KVM_CAP_SET_GUEST_DEBUG (this KVM cannot debug guests)",
            uapi.KVM_CAP_IMMEDIATE_EXIT: "KVM_CAP_IMMEDIATE_EXIT (needed to interrupt a running vCPU)",
            uapi.KVM_CAP_USER_MEMORY: "KVM_CAP_USER_MEMORY",
        }
        for cap, name in checks.items():
            if ioctl_int(fd, uapi.KVM_CHECK_EXTENSION, cap, what="KVM_CHECK_EXTENSION") <= 0:
                raise BackendError(f"{path}: missing {name}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _interrupt_only(signum: int, frame: FrameType | None) -> None:
    """Runs (in the main thread) after a kick: the signal's only job was to make KVM_RUN return EINTR."""


def install_kick_handler() -> None:
    """Give KICK_SIGNAL a Python handler, once; an application's own handler is kept (it works as well)."""
    current = signal.getsignal(KICK_SIGNAL)
    if callable(current):
        return
    if threading.current_thread() is not threading.main_thread():
        raise BackendError(
            f"create the KVM backend on the main thread: it installs the {KICK_SIGNAL.name} handler kick() needs"
        )
    signal.signal(KICK_SIGNAL, _interrupt_only)


def unblock_kick_signal() -> None:
    """A thread that inherited a mask blocking KICK_SIGNAL could never be kicked out of KVM_RUN."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {KICK_SIGNAL})


def kick_thread(thread_id: int) -> None:
    try:
        signal.pthread_kill(thread_id, KICK_SIGNAL)
    except ProcessLookupError:  # the thread is gone: nothing to interrupt
        pass


def check_vcpu_count(cpus: int) -> None:
    """The vCPU count a backend accepts: 1..MAX_VCPUS (one line, before any VM exists)."""
    if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= MAX_VCPUS:
        raise BackendError(f"the number of vCPUs must be between 1 and {MAX_VCPUS}, not {cpus!r}")


class Vcpu:
    """One vCPU: its fd, its kvm_run mapping, the thread inside its run() (threading.get_ident(), None when
    no run() is in progress) and the KVM_SET_GUEST_DEBUG control last set on it (0 when debugging is off).
    The arch backends add their own per-vCPU state (debug registers, ONE_REG buffer)."""

    def __init__(self, index: int, fd: int, run: mmap.mmap) -> None:
        self.index = index
        self.fd = fd
        self.run = run
        self.thread: int | None = None
        self.control = 0


V = TypeVar("V", bound=Vcpu)


_MEMREGION = Codec(uapi.kvm_userspace_memory_region)


class VmLifecycle(Generic[V]):
    """What both KVM backends share once their VM exists: run(), kick() and close() for every vCPU.
    Subclasses set these attributes in their constructor and append each vCPU to ``_vcpus`` (index order)
    as soon as its fd and mapping exist, so that close() releases a half-built VM.

    KVM serialises every ioctl of one vCPU (its vcpu mutex): get_regs/get_reg/set_regs/set_guest_debug of
    a vCPU whose run() is in progress block until that run() returns, also for an arm64 vCPU that sleeps
    powered off.  A debugger stops (kicks) a vCPU before touching it; guest memory is never blocked."""

    _lock: threading.Lock  # guards _closed and every vCPU's thread / immediate_exit
    _closed: bool
    _vcpus: list[V]
    _fds: list[int]  # /dev/kvm, VM, vCPU 0..N-1, in creation order
    _ram: mmap.mmap | None
    _ram_view: memoryview | None
    _immediate_exit: int  # offsetof(kvm_run, immediate_exit)

    def _run_until_exit(self, v: V) -> Exit:
        """KVM_RUN on ``v`` until an exit worth reporting (the arch's exit handling)."""
        raise NotImplementedError

    def _create(self) -> None:
        """The arch's VM: memory, vCPUs, their initial state (see _set_up)."""
        raise NotImplementedError

    def _set_up(self, cpus: int, console: ConsoleSink | None, kvm_path: str, immediate_exit: int) -> None:
        """The bookkeeping every VM starts with, then the arch's _create(); a half-built VM is closed."""
        self.cpus = cpus
        self._console = console
        self._console_lock = threading.Lock()  # several vCPUs may write the console at once
        self._lock = threading.Lock()
        self._immediate_exit = immediate_exit
        self._closed = False
        self._vcpus = []
        self._fds = []
        self._ram = None
        self._ram_view = None
        self._kvm_path = kvm_path
        install_kick_handler()
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create_vm_with_ram(self, ram_size: int, guest_phys_addr: int) -> memoryview:
        """Open /dev/kvm, create the VM, and give it anonymous memory as memslot 0 at guest_phys_addr;
        returns a view of that memory."""
        self._kvm = open_kvm(self._kvm_path)
        self._fds.append(self._kvm)
        self._vm = ioctl_int(self._kvm, uapi.KVM_CREATE_VM, 0, what="KVM_CREATE_VM")  # default IPA size
        self._fds.append(self._vm)
        self._ram = mmap.mmap(-1, ram_size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._ram_view = memoryview(self._ram)
        anchor = ctypes.c_char.from_buffer(self._ram)
        address = ctypes.addressof(anchor)
        del anchor  # the export would keep the mmap from closing; close() unmaps RAM only after the VM is gone
        region = {"slot": 0, "flags": 0, "guest_phys_addr": guest_phys_addr, "memory_size": ram_size}
        region["userspace_addr"] = address
        ioctl_in(self._vm, uapi.KVM_SET_USER_MEMORY_REGION, _MEMREGION.pack(region), what="KVM_SET_USER_MEMORY_REGION")
        return self._ram_view

    def _cpu(self, vcpu: int) -> V:
        """The vCPU with this index; BackendError (as KVM's EINVAL) for any other number."""
        n = len(self._vcpus)
        if isinstance(vcpu, bool) or not isinstance(vcpu, int) or not 0 <= vcpu < n:
            if n == 1:
                raise BackendError(f"no vCPU {vcpu}: this VM has one vCPU (0)")
            raise BackendError(f"no vCPU {vcpu}: this VM has {n} vCPUs (0..{n - 1})")
        return self._vcpus[vcpu]

    def run(self, vcpu: int = 0) -> Exit:
        """KVM_RUN of ``vcpu`` on the calling thread, which kick(vcpu) can then signal.  Each vCPU runs on
        one thread at a time; different vCPUs run concurrently on different threads."""
        v = self._cpu(vcpu)
        unblock_kick_signal()
        with self._lock:
            if self._closed:
                raise BackendError("the VM is closed")
            if v.thread is not None:
                raise BackendError(f"run() of vCPU {vcpu} is already running on another thread")
            v.thread = threading.get_ident()
        try:
            return self._run_until_exit(v)
        finally:
            with self._lock:
                v.thread = None
                if not self._closed:
                    v.run[self._immediate_exit] = 0  # this stop served any kick made during the run

    def kick(self, vcpu: int = 0) -> None:
        """Thread-safe: immediate_exit for a thread about to enter this vCPU's KVM_RUN, a signal for the
        one inside it.  Other vCPUs are not disturbed."""
        v = self._cpu(vcpu)
        with self._lock:
            if self._closed:
                return
            v.run[self._immediate_exit] = 1
            if v.thread is not None:
                kick_thread(v.thread)

    def close(self) -> None:
        """Releases the VM (fds and mappings); the backend is unusable afterwards.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for v in self._vcpus:
            v.run.close()
        for fd in reversed(self._fds):  # vCPUs, VM, then /dev/kvm: the VM (and its memslot) goes first
            os.close(fd)
        self._fds.clear()
        if self._ram is not None:
            if self._ram_view is not None:
                self._ram_view.release()
            self._ram.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
