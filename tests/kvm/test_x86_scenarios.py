"""KvmX86Backend on this host's real /dev/kvm, at the backends.api level.

D1-D7 are kvm-hw-debug.md 7.D (after tools/testing/selftests/kvm/x86/debug_regs.c and kvm-ioctls'
test_run_code), on guests/x86/debug_regs.S; then kick(), memory and register round trips, the serial
console, the exit port, faults and the host checks.

Where a host legitimately differs (nested or software hypervisors such as PVM do not deliver every
debug event), the test finds out by probing (backends.kvm.x86.probe_host runs tiny guests), checks the
scenario behaves as the probe says, and then skips with the probe's finding: it never assumes.
Differences from the selftest: the guest runs without an in-kernel LAPIC, so D4's pending self-IPI
(which BLOCKIRQ must hold back) cannot be posted; D7 steps over port I/O and MMIO in long mode, not
real mode.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from backends.api import (
    GUESTDBG_BLOCKIRQ,
    GUESTDBG_ENABLE,
    GUESTDBG_SINGLESTEP,
    GUESTDBG_USE_HW,
    GUESTDBG_USE_SW_BP,
    BackendError,
    DebugRegs,
    Exit,
    ExitReason,
    GuestMemoryError,
    X86DebugRegs,
)
from backends.elf import ImageError
from backends.kvm import open_backend
from backends.kvm.x86 import RESERVED_TOP, KvmX86Backend, image_from_code, load_x86_image, probe_host
from tests.conftest import DEMO_ELF
from tests.kvm.conftest import HAVE_KVM, NO_KVM, elf_symbols

pytestmark = pytest.mark.skipif(not HAVE_KVM, reason=NO_KVM)

DR6_ACTIVE_LOW = 0xFFFF0FF0
DR6_BD, DR6_BS = 1 << 13, 1 << 14
DR7_FIXED = 0x400
DR7_GD = 1 << 13
GUEST_DONE = 0x2A  # debug_regs.S writes it to port 0xf4 at the end
USE_HW_BP = GUESTDBG_USE_HW

MakeVm = Callable[..., KvmX86Backend]
Guest = tuple[Path, dict[str, int]]


def _dr7_exec(slot: int) -> int:
    return DR7_FIXED | 1 << (2 * slot + 1)  # G_slot, R/W 00 (execute), LEN 00


def _dr7_write4(slot: int) -> int:
    return DR7_FIXED | 1 << (2 * slot + 1) | 0b1101 << (16 + 4 * slot)  # R/W 01 (write), LEN 11 (4 bytes)


def _debugreg(slot: int, addr: int, dr7: int) -> X86DebugRegs:
    regs = X86DebugRegs()
    regs.debugreg[slot] = addr
    regs.debugreg[7] = dr7
    return regs


def _step_dr7() -> int:
    """DR7 in a step exit: the guest's own DR7 (0x400 after reset) on VMX/SVM.  PVM leaves the field
    unwritten; the backend then reports the DR7 it loaded, which is the same 0x400."""
    return DR7_FIXED


def _vm_at(make_vm: MakeVm, guest: Guest, label: str) -> KvmX86Backend:
    vm = make_vm(guest[0])
    vm.set_regs({"rip": guest[1][label]})
    return vm


# ---- D1: int3 --------------------------------------------------------------------------------------------
def test_d1_int3_exits_with_bp_vector_at_the_int3(make_vm: MakeVm, debug_guest: Guest) -> None:
    sym = debug_guest[1]
    vm = _vm_at(make_vm, debug_guest, "sw_bp")
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP)
    ex = vm.run()
    assert (ex.reason, ex.exception, ex.pc) == (ExitReason.DEBUG, 3, sym["sw_bp"]), ex
    assert vm.get_reg("rip") == sym["sw_bp"]  # the int3 has not retired: userspace skips it
    if not probe_host().int3_native:
        assert "emulator" in ex.detail  # the workaround is visible, not silent
    vm.set_regs({"rip": sym["sw_bp"] + 1})
    ex = vm.run()
    assert (ex.reason, ex.detail) == (ExitReason.SHUTDOWN, "guest halted")
    assert vm.get_reg("rip") == sym["after_sw_bp"] + 1


# ---- D2: instruction breakpoints in each debug register -------------------------------------------------
@pytest.mark.parametrize("slot", range(4))
def test_d2_hw_breakpoint_in_each_slot(make_vm: MakeVm, debug_guest: Guest, console: bytearray, slot: int) -> None:
    sym = debug_guest[1]
    vm = make_vm(debug_guest[0])
    vm.set_guest_debug(GUESTDBG_ENABLE | USE_HW_BP, _debugreg(slot, sym["hw_bp"], _dr7_exec(slot)))
    for _ in range(3):  # fault-like and RF is not set: the same breakpoint again on every run
        ex = vm.run()
        assert (ex.reason, ex.exception, ex.pc) == (ExitReason.DEBUG, 1, sym["hw_bp"]), ex
        assert ex.dr6 == DR6_ACTIVE_LOW | 1 << slot
        assert vm.get_reg("rip") == sym["hw_bp"]
    assert bytes(console) == b"x86 debug guest\n"  # the banner ran before the breakpoint
    vm.set_regs({"rip": sym["hw_bp"] + 1})  # skip the nop, as the selftest does
    ex = vm.run()
    assert (ex.reason, ex.status) == (ExitReason.SHUTDOWN, GUEST_DONE)


# ---- D3: data breakpoints --------------------------------------------------------------------------------
@pytest.mark.parametrize("slot", range(4))
def test_d3_data_breakpoint_in_each_slot(make_vm: MakeVm, debug_guest: Guest, slot: int) -> None:
    sym = debug_guest[1]
    vm = _vm_at(make_vm, debug_guest, "write_data")
    value = 0x1122_3344_5566_7700 | slot
    vm.set_regs({"rax": value})
    vm.set_guest_debug(GUESTDBG_ENABLE | USE_HW_BP, _debugreg(slot, sym["guest_value"], _dr7_write4(slot)))
    ex = vm.run()
    host = probe_host()
    if not host.data_breakpoints:
        # consistent with the probe: the write went through unseen and the guest ran to its end
        assert ex.reason is ExitReason.SHUTDOWN and ex.status == GUEST_DONE, ex
        assert vm.read_memory(sym["guest_value"], 8) == value.to_bytes(8, "little")
        finding = host.finding("data breakpoint")
        pytest.skip(f"this host's KVM does not deliver data breakpoints (probe guest: {finding})")
    assert (ex.reason, ex.exception, ex.pc) == (ExitReason.DEBUG, 1, sym["after_write"]), ex  # a trap
    assert ex.dr6 == DR6_ACTIVE_LOW | 1 << slot
    assert vm.read_memory(sym["guest_value"], 8) == value.to_bytes(8, "little")  # the write happened
    vm.set_regs({"rip": sym["after_write"] - 7})  # roll back over the 7-byte mov: it hits again
    assert vm.run().pc == sym["after_write"]


# ---- D4: single steps over basic and emulated instructions ------------------------------------------------
def test_d4_single_steps_with_blockirq(make_vm: MakeVm, debug_guest: Guest) -> None:
    sym = debug_guest[1]
    vm = _vm_at(make_vm, debug_guest, "ss_start")
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP | GUESTDBG_BLOCKIRQ, _debugreg(0, 0, DR7_FIXED))
    pc = sym["ss_start"]
    for length in (1, 2, 2, 5, 2, 1):  # sti, xor, cpuid, mov $MSR, wrmsr, cli
        ex = vm.run()
        pc += length
        assert (ex.reason, ex.exception, ex.pc, ex.dr6) == (ExitReason.DEBUG, 1, pc, 0xFFFF4FF0), ex
        assert vm.get_reg("rip") == pc
    assert pc == sym["ss_end"]
    assert not vm.get_reg("eflags") & 1 << 9  # cli ran: IF clear (and the hidden TF never shows)


# ---- D5: DR7.GD ------------------------------------------------------------------------------------------
def test_d5_general_detect_traps_the_debug_register_access(make_vm: MakeVm, debug_guest: Guest) -> None:
    sym = debug_guest[1]
    vm = _vm_at(make_vm, debug_guest, "gd_insn")
    vm.set_guest_debug(GUESTDBG_ENABLE | USE_HW_BP, _debugreg(0, 0, DR7_FIXED | DR7_GD))
    ex = vm.run()
    host = probe_host()
    if not host.general_detect:
        assert ex.reason is ExitReason.SHUTDOWN and ex.status == GUEST_DONE, ex  # the mov ran unseen
        pytest.skip(f"this host's KVM does not deliver DR7.GD debug exits (probe guest: {host.finding('DR7.GD')})")
    assert (ex.reason, ex.exception, ex.pc) == (ExitReason.DEBUG, 1, sym["gd_insn"]), ex
    assert ex.dr6 == DR6_ACTIVE_LOW | DR6_BD


# ---- D6: debugging off: the guest completes -------------------------------------------------------------------
def test_d6_guest_debug_off_runs_to_completion(make_vm: MakeVm, debug_guest: Guest, console: bytearray) -> None:
    sym = debug_guest[1]
    vm = make_vm(debug_guest[0])
    vm.set_guest_debug(GUESTDBG_ENABLE | USE_HW_BP | GUESTDBG_SINGLESTEP, _debugreg(0, sym["hw_bp"], _dr7_exec(0)))
    vm.set_guest_debug(0)
    ex = vm.run()
    assert (ex.reason, ex.status) == (ExitReason.SHUTDOWN, GUEST_DONE), ex
    assert bytes(console) == b"x86 debug guest\ndone\n"


# ---- D7: single steps over port I/O and MMIO ----------------------------------------------------------------
def test_d7_single_steps_over_port_io_and_mmio(make_vm: MakeVm, debug_guest: Guest) -> None:
    sym = debug_guest[1]
    vm = _vm_at(make_vm, debug_guest, "io_start")
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP)
    for label in ("io_out", "io_in", "mmio_read", "mmio_write", "io_end"):
        ex = vm.run()
        assert (ex.reason, ex.exception, ex.pc) == (ExitReason.DEBUG, 1, sym[label]), (label, ex)
        assert ex.dr6 & 0xFFFF == 0x4FF0
        # the backend completes a step the host lost after an output (detail says so) with the DR7 KVM
        # loads; the host's own step exits carry its DR7
        assert ex.dr7 == (DR7_FIXED if ex.detail else _step_dr7()), ex
        assert vm.get_reg("rip") == sym[label]
        if label in ("mmio_read", "mmio_write"):  # `in` and the MMIO load read all ones
            assert vm.get_reg("rax") & 0xFF == 0xFF


# ---- kick --------------------------------------------------------------------------------------------------
def test_kick_from_another_thread_stops_a_spinning_guest(make_vm: MakeVm, debug_guest: Guest) -> None:
    sym = debug_guest[1]
    vm = _vm_at(make_vm, debug_guest, "spin")
    kicked_at: list[float] = []

    def kicker() -> None:
        time.sleep(0.2)
        kicked_at.append(time.monotonic())
        vm.kick()

    t = threading.Thread(target=kicker)
    t.start()
    ex = vm.run()  # on the main thread
    stopped = time.monotonic()
    t.join()
    assert ex.reason is ExitReason.INTERRUPTED
    assert stopped - kicked_at[0] < 1.0
    assert int.from_bytes(vm.read_memory(sym["spin_count"], 8), "little") > 0  # it really ran


def test_kick_stops_run_on_a_worker_thread(make_vm: MakeVm, debug_guest: Guest) -> None:
    vm = _vm_at(make_vm, debug_guest, "spin")
    result: list[Exit] = []
    t = threading.Thread(target=lambda: result.append(vm.run()))
    t.start()
    time.sleep(0.2)
    assert t.is_alive()
    start = time.monotonic()
    vm.kick()
    t.join(1.0)
    assert not t.is_alive(), "run() did not return within 1 s of kick()"
    assert result[0].reason is ExitReason.INTERRUPTED
    assert time.monotonic() - start < 1.0


def test_kick_before_run_interrupts_the_next_run_only(make_vm: MakeVm, debug_guest: Guest) -> None:
    sym = debug_guest[1]
    vm = _vm_at(make_vm, debug_guest, "hw_bp")
    vm.kick()
    assert vm.run().reason is ExitReason.INTERRUPTED
    assert vm.get_reg("rip") == sym["hw_bp"]  # nothing ran
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP)
    ex = vm.run()  # the kick was consumed: this run steps
    assert (ex.reason, ex.pc) == (ExitReason.DEBUG, sym["hw_bp"] + 1)


def test_a_kick_served_by_another_stop_does_not_leak_into_the_next_run(make_vm: MakeVm, debug_guest: Guest) -> None:
    """As with the simulator: run() returning for any reason serves the kicks made during it."""
    sym = debug_guest[1]
    vm = make_vm(debug_guest[0])
    vm.set_guest_debug(GUESTDBG_ENABLE | USE_HW_BP, _debugreg(0, sym["hw_bp"], _dr7_exec(0)))
    assert vm.run().pc == sym["hw_bp"]
    vm.set_regs({"rip": sym["hw_bp"] + 1})
    vm.set_guest_debug(0)
    assert vm.run().status == GUEST_DONE


# ---- memory and registers -------------------------------------------------------------------------------------
def test_memory_round_trip_and_bounds(make_vm: MakeVm, debug_guest: Guest) -> None:
    vm = make_vm(debug_guest[0], ram_size=16 << 20)
    data = bytes(range(256)) * 4
    for addr in (0, 0x100000 - 3, (16 << 20) - len(data)):
        vm.write_memory(addr, data)
        assert vm.read_memory(addr, len(data)) == data
    assert vm.read_memory(16 << 20, 0) == b""
    for addr, size in (((16 << 20) - 1, 2), (16 << 20, 1), (-1, 1), (1 << 40, 8)):
        with pytest.raises(GuestMemoryError):
            vm.read_memory(addr, size)
        with pytest.raises(GuestMemoryError):
            vm.write_memory(addr, bytes(size))


def test_guest_sees_host_writes_and_host_sees_guest_writes(make_vm: MakeVm, debug_guest: Guest) -> None:
    sym = debug_guest[1]
    vm = _vm_at(make_vm, debug_guest, "write_data")
    vm.set_regs({"rax": 0xDEAD_BEEF_CAFE_F00D})
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP)
    assert vm.run().pc == sym["after_write"]
    assert vm.read_memory(sym["guest_value"], 8) == (0xDEAD_BEEF_CAFE_F00D).to_bytes(8, "little")
    # patch code: `mov $0x77, %al` over the 2-byte `mov $0x41, %al` at io_start, then step it
    vm.write_memory(sym["io_start"], b"\xb0\x77")
    vm.set_regs({"rip": sym["io_start"], "rax": 0})
    vm.run()
    assert vm.get_reg("rax") == 0x77


def test_register_round_trip(make_vm: MakeVm, debug_guest: Guest) -> None:
    vm = make_vm(debug_guest[0])
    before = vm.get_regs()
    assert set(before) == set(_ALL_REGS)
    assert list(before)[:18] == list(_ALL_REGS)[:18]  # gdb's amd64 order
    assert before["cs"] == 0x08 and before["ss"] == 0x10 and before["eflags"] == 0x2
    new = {f"r{i}": 0x0101_0101_0101_0101 * i for i in range(8, 16)}
    new.update({"rax": 1, "rbx": 2, "rcx": 3, "rdx": 4, "rsi": 5, "rdi": 6, "rbp": 7, "rsp": 0x7F000})
    new.update({"rip": 0x100013, "eflags": 0x202 | 1 << 21, "fs_base": 0xFFFF_8000_1234_5000, "gs_base": 0x4000})
    one = 0x3FFF << 64 | 1 << 63  # 1.0 as an 80-bit extended (valid: tag 00)
    new.update({f"st{i}": one + i for i in range(8)})
    new.update({f"xmm{i}": (0x1111_2222_3333_4444_5555_6666_7777_8888 * (i + 1)) & (1 << 128) - 1 for i in range(16)})
    new.update({"fctrl": 0x27F, "fstat": 0x3800, "ftag": 0, "fop": 0x1DE})
    new.update({"fioff": 0x1234_5678, "fiseg": 0x9ABC, "fooff": 0x0BAD_F00D, "foseg": 0x55, "mxcsr": 0x1F80 | 0x8000})
    vm.set_regs(new)
    after = vm.get_regs()
    assert {k: after[k] for k in new} == new
    assert {k: after[k] for k in after if k not in new} == {k: before[k] for k in before if k not in new}
    for name, value in new.items():
        assert vm.get_reg(name) == value, name
    vm.set_regs({"ftag": 0xFFFF})  # all empty; back through the abridged tag
    assert vm.get_reg("ftag") == 0xFFFF


def test_register_errors(make_vm: MakeVm, debug_guest: Guest) -> None:
    vm = make_vm(debug_guest[0])
    rip = vm.get_reg("rip")
    with pytest.raises(BackendError, match="unknown register"):
        vm.set_regs({"rip": 0x100001, "x0": 1})
    assert vm.get_reg("rip") == rip  # nothing was written
    with pytest.raises(BackendError, match="unknown register"):
        vm.get_reg("pc")
    for name, value in (("rax", 1 << 64), ("eflags", 1 << 32), ("cs", 0x10000), ("st0", 1 << 80), ("rax", -1)):
        with pytest.raises(BackendError, match="out of range"):
            vm.set_regs({name: value})
    with pytest.raises(BackendError, match="vCPU"):
        vm.get_regs(1)


# ---- guest debug arguments --------------------------------------------------------------------------------------
def test_set_guest_debug_refuses_unknown_bits_and_arm64_registers(make_vm: MakeVm, debug_guest: Guest) -> None:
    vm = make_vm(debug_guest[0])
    with pytest.raises(BackendError, match="EINVAL"):
        vm.set_guest_debug(GUESTDBG_ENABLE | 1 << 2)
    with pytest.raises(BackendError, match="EINVAL"):
        vm.set_guest_debug(GUESTDBG_ENABLE | 1 << 21)
    with pytest.raises(BackendError, match="X86DebugRegs"):
        vm.set_guest_debug(GUESTDBG_ENABLE, DebugRegs())
    vm.set_guest_debug(0x1F0003, X86DebugRegs())  # every valid bit at once is accepted (KVM: 0x1F0003)


# ---- console, exit port, faults -----------------------------------------------------------------------------------
def test_serial_output_reaches_the_console(make_vm: MakeVm, debug_guest: Guest) -> None:
    received: list[bytes] = []
    vm = make_vm(debug_guest[0], console=received.append)
    vm.run()
    assert b"".join(received) == b"x86 debug guest\ndone\n"
    assert all(len(chunk) == 1 for chunk in received)  # one `out` per byte


def test_exit_port_gives_shutdown_with_the_value_and_a_completed_out(make_vm: MakeVm, debug_guest: Guest) -> None:
    sym = debug_guest[1]
    vm = _vm_at(make_vm, debug_guest, "exit_insn")
    vm.set_regs({"rax": 0x5A})
    ex = vm.run()
    assert (ex.reason, ex.status) == (ExitReason.SHUTDOWN, 0x5A)
    assert vm.get_reg("rip") == sym["after_exit"]  # the out has retired: registers are final


def test_a_guest_exception_without_idt_is_a_fault(make_vm: MakeVm) -> None:
    vm = make_vm(image_from_code(b"\x90\x0f\x0b"))  # nop; ud2
    ex = vm.run()
    assert (ex.reason, ex.signal) == (ExitReason.FAULT, 11), ex
    assert "triple fault" in ex.detail


def test_hlt_is_shutdown(make_vm: MakeVm) -> None:
    ex = make_vm(image_from_code(b"\xf4")).run()
    assert (ex.reason, ex.detail) == (ExitReason.SHUTDOWN, "guest halted")


def test_sse_works_from_the_start(make_vm: MakeVm) -> None:
    # pxor %xmm3, %xmm3 ; pcmpeqd %xmm3, %xmm3 ; hlt   (CR4.OSFXSR set, MXCSR at its reset value)
    vm = make_vm(image_from_code(bytes.fromhex("660fefdb660f76dbf4")))
    assert vm.get_reg("mxcsr") == 0x1F80
    ex = vm.run()
    host = probe_host()
    if not host.sse:
        assert (ex.reason, ex.signal) == (ExitReason.FAULT, 4) and "emulate" in ex.detail, ex
        pytest.skip(f"this host cannot run guest SSE instructions at CPL 0 (probe guest: {host.finding('SSE')})")
    assert ex.detail == "guest halted", ex
    assert vm.get_reg("xmm3") == (1 << 128) - 1


# ---- the demo guest, driven as the stub drives a gdb session -------------------------------------------------
def test_demo_guest_with_a_software_breakpoint_as_gdb_uses_it(
    make_vm: MakeVm, x86_guest: Callable[[str], Path], console: bytearray
) -> None:
    """`break add_one` + `continue` x3: int3 planted, hit, stepped over with the original byte back."""
    elf = x86_guest("demo")
    sym = elf_symbols(elf)
    vm = make_vm(elf)
    add_one, counter = sym["add_one"], sym["counter"]
    original = vm.read_memory(add_one, 1)
    vm.write_memory(add_one, b"\xcc")
    for hit in range(3):
        vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP)
        ex = vm.run()
        assert (ex.reason, ex.exception, ex.pc) == (ExitReason.DEBUG, 3, add_one), ex
        assert int.from_bytes(vm.read_memory(counter, 8), "little") == hit
        vm.write_memory(add_one, original)  # step over it
        vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP | GUESTDBG_SINGLESTEP)
        assert vm.run().pc > add_one
        vm.write_memory(add_one, b"\xcc")
    assert bytes(console) == b"x86 demo guest started\n"


def test_demo_guest_with_a_hardware_breakpoint_and_stepping(make_vm: MakeVm, x86_guest: Callable[[str], Path]) -> None:
    elf = x86_guest("demo")
    sym = elf_symbols(elf)
    vm = make_vm(elf)
    regs = _debugreg(2, sym["update_point"], _dr7_exec(2))
    vm.set_guest_debug(GUESTDBG_ENABLE | USE_HW_BP, regs)
    ex = vm.run()
    assert (ex.pc, ex.dr6) == (sym["update_point"], DR6_ACTIVE_LOW | 1 << 2)
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP)  # breakpoint off for one step, as gdb does
    pcs = [vm.run().pc for _ in range(5)]  # mov counter,%rax; mov %rax,point; add; mov %rax,point+8; ret
    assert pcs[:4] == sorted(pcs[:4]) and pcs[0] > sym["update_point"]
    assert sym["main_loop"] < pcs[4] < sym["add_one"]  # ret: back in main_loop
    assert int.from_bytes(vm.read_memory(sym["point"] + 8, 8), "little") == 2  # point.y = 2 * counter (1)
    assert vm.get_reg("rsp") < sym["stack_top"]  # its own stack, in .bss


# ---- images, sizes, capabilities, host checks -------------------------------------------------------------------
def test_a_non_x86_image_is_refused_with_one_line() -> None:
    with pytest.raises(ImageError, match="not x86-64") as e:
        load_x86_image(DEMO_ELF)  # the aarch64 demo
    assert "\n" not in str(e.value)
    with pytest.raises(ImageError, match="not x86-64"):
        KvmX86Backend(DEMO_ELF)


def test_an_image_overlapping_the_page_tables_is_refused() -> None:
    top = (8 << 20) - RESERVED_TOP
    with pytest.raises(BackendError, match="page tables"):
        KvmX86Backend(image_from_code(b"\xf4", base=top), ram_size=8 << 20)
    with pytest.raises(BackendError, match="RAM size"):
        KvmX86Backend(image_from_code(b"\xf4"), ram_size=(8 << 20) + 1)


def test_missing_kvm_device_is_one_clear_line(debug_guest: Guest) -> None:
    with pytest.raises(BackendError) as e:
        KvmX86Backend(debug_guest[0], kvm_path="/nonexistent/kvm")
    assert "/nonexistent/kvm does not exist" in str(e.value) and "\n" not in str(e.value)


def test_capabilities(make_vm: MakeVm, debug_guest: Guest) -> None:
    caps = make_vm(debug_guest[0]).capabilities()
    # a host that does not deliver data breakpoints (probed) reports none, so gdb watches in software
    wps = 4 if probe_host().data_breakpoints else 0
    assert (caps.arch, caps.hw_breakpoints, caps.hw_watchpoints, caps.single_step) == ("x86_64", 4, wps, True)
    assert caps.guest_debug_flags == 0x1F0003
    assert any("shared by breakpoints and watchpoints" in n for n in caps.notes)


def test_open_backend_picks_the_host_architecture(debug_guest: Guest) -> None:
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 host only")
    vm = open_backend(debug_guest[0], 8 << 20, None)
    try:
        assert isinstance(vm, KvmX86Backend) and vm.capabilities().arch == "x86_64"
    finally:
        vm.close()


def test_single_step_round_trip_is_fast(make_vm: MakeVm, debug_guest: Guest) -> None:
    vm = _vm_at(make_vm, debug_guest, "spin")
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP)
    n = 500
    start = time.perf_counter()
    for _ in range(n):
        assert vm.run().reason is ExitReason.DEBUG
    per_step = (time.perf_counter() - start) / n
    assert per_step < 0.005, f"{per_step * 1e6:.0f} us per single step"


_ALL_REGS = (
    ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp")
    + tuple(f"r{i}" for i in range(8, 16))
    + ("rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs")
    + tuple(f"st{i}" for i in range(8))
    + ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
    + tuple(f"xmm{i}" for i in range(16))
    + ("mxcsr", "fs_base", "gs_base")
)
