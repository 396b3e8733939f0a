"""/dev/kvm plumbing shared by the KVM backends: opening it with the host checks, ioctls whose errors
become BackendError, and the signal that kicks a vCPU thread out of KVM_RUN.

Kicking: KVM_RUN only returns early for a pending signal, and checks kvm_run.immediate_exit only on entry,
so kick() sets immediate_exit (covers a thread about to enter KVM_RUN) and sends KICK_SIGNAL to the
thread inside it.  The signal needs a handler (a default-ignored or SIG_DFL signal would be dropped or
kill the process); Python can install one only from the main thread, so backends install it when they
are created.  KVM returns -EINTR and CPython's fcntl.ioctl does not retry it (PEP 475 retries are
for calls like read(); ioctl is not among them), so KVM_RUN raises InterruptedError.
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

from backends.api import BackendError, Exit
from backends.kvm import uapi

KVM_PATH = "/dev/kvm"
KICK_SIGNAL = signal.SIGUSR1

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


class VmLifecycle:
    """What both KVM backends share once their VM exists: kick() and close().  Subclasses set these
    attributes in their constructor (None until created)."""

    _lock: threading.Lock
    _closed: bool
    _run: mmap.mmap | None  # the vCPU's kvm_run mapping
    _thread: int | None  # threading.get_ident() of the thread inside run(), if any
    _fds: list[int]  # /dev/kvm, VM, vCPU, in creation order
    _ram: mmap.mmap | None
    _ram_view: memoryview | None
    _immediate_exit: int  # offsetof(kvm_run, immediate_exit)

    def _run_until_exit(self) -> Exit:
        """KVM_RUN until an exit worth reporting (the arch's exit handling)."""
        raise NotImplementedError

    def run(self, vcpu: int = 0) -> Exit:
        """KVM_RUN on the calling thread, which kick() can then signal; one caller at a time."""
        self._check_vcpu(vcpu)
        unblock_kick_signal()
        with self._lock:
            if self._closed:
                raise BackendError("the VM is closed")
            if self._thread is not None:
                raise BackendError("run() is already running on another thread")
            self._thread = threading.get_ident()
        try:
            return self._run_until_exit()
        finally:
            with self._lock:
                self._thread = None
                if self._run is not None:
                    self._run[self._immediate_exit] = 0  # this stop served any kick made during the run

    def kick(self, vcpu: int = 0) -> None:
        """Thread-safe: immediate_exit for a thread about to enter KVM_RUN, a signal for one inside it."""
        with self._lock:
            if self._closed or self._run is None:
                return
            self._run[self._immediate_exit] = 1
            if self._thread is not None:
                kick_thread(self._thread)

    def _check_vcpu(self, vcpu: int) -> None:
        if vcpu != 0:
            raise BackendError(f"no vCPU {vcpu}: this VM has one vCPU (0)")

    def close(self) -> None:
        """Releases the VM (fds and mappings); the backend is unusable afterwards.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._run is not None:
            self._run.close()
        for fd in reversed(self._fds):  # vCPU, VM, then /dev/kvm: the VM (and its memslot) goes first
            os.close(fd)
        self._fds.clear()
        if self._ram is not None:
            if self._ram_view is not None:
                self._ram_view.release()
            self._ram.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
