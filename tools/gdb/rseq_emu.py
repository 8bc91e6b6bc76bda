"""gdb support for stepping through Linux restartable sequences (rseq).

Single-stepping into an rseq critical section never gets anywhere: every
step is a preemption, so the kernel sends the thread back to abort_ip. This
extension completes the current section by emulation instead, with
`rseq-emu gdb-serve` doing the work and asking gdb for memory on demand
(protocol: docs/debugger.md).

Load with `source tools/gdb/rseq_emu.py`. Commands and settings:

  rseq-step              complete the armed section the thread is in by
                         emulation, print each emulated instruction, and
                         leave the thread at the exit (registers and memory
                         as the CPU would have left them)
  rseq-stepi             `rseq-step` when inside an armed section, else `stepi`
  set rseq-emu-stepi on  after every stop (stepi, nexti, breakpoints) that
                         lands inside an armed section, complete it at once
  set rseq-emu-path P    the rseq-emu binary (default: $RSEQ_EMU or rseq-emu)
  set rseq-emu-area E    expression for the thread's struct rseq address
                         (default: glibc's, $fs_base + __rseq_offset)
  set rseq-emu-signature N   the registered RSEQ_SIG (default 0x53053053)
"""

import json
import os
import subprocess

import gdb

GPRS = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]
MASK64 = (1 << 64) - 1


class RseqEmuError(gdb.GdbError):
    """A failure of the extension, reported as a gdb error."""


class _Param(gdb.Parameter):
    def __init__(self, name, kind, default, doc):
        self.__doc__ = doc
        self.set_doc = doc
        self.show_doc = doc
        super().__init__(name, gdb.COMMAND_RUNNING, kind)
        self.value = default

    def get_set_string(self):
        return ""


PATH = _Param("rseq-emu-path", gdb.PARAM_STRING,
              os.environ.get("RSEQ_EMU", "rseq-emu"),
              "The rseq-emu binary used by rseq-step.")
AREA = _Param("rseq-emu-area", gdb.PARAM_STRING,
              "$fs_base + *(long *)&__rseq_offset",
              "Expression giving the address of the thread's struct rseq.")
SIGNATURE = _Param("rseq-emu-signature", gdb.PARAM_ZUINTEGER, 0x53053053,
                   "The registered rseq signature (RSEQ_SIG).")


class _Server:
    """The `rseq-emu gdb-serve` child process (started on first use)."""

    def __init__(self):
        self.proc = None

    def ensure(self):
        if self.proc is not None and self.proc.poll() is None:
            return
        try:
            self.proc = subprocess.Popen(
                [PATH.value, "gdb-serve"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True, bufsize=1)
        except OSError as e:
            raise RseqEmuError("rseq-emu: cannot start `%s gdb-serve`: %s "
                               "(set rseq-emu-path)" % (PATH.value, e))
        hello = self.recv()
        if hello.get("hello") != "rseq-emu" or hello.get("protocol") != 1:
            raise RseqEmuError("rseq-emu: unexpected greeting %r" % hello)

    def send(self, obj):
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def recv(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc = None
            raise RseqEmuError("rseq-emu: gdb-serve exited")
        return json.loads(line)


SERVER = _Server()


def _reg(frame, name):
    return int(frame.read_register(name)) & MASK64


def _registers():
    frame = gdb.selected_frame()
    regs = {name: _reg(frame, name) for name in GPRS}
    regs["rip"] = _reg(frame, "rip")
    regs["eflags"] = _reg(frame, "eflags")
    regs["fs_base"] = _reg(frame, "fs_base")
    regs["gs_base"] = _reg(frame, "gs_base")
    return regs


def _rseq_area():
    try:
        return int(gdb.parse_and_eval(AREA.value)) & MASK64
    except gdb.error as e:
        raise RseqEmuError("rseq-emu: cannot evaluate the rseq area `%s`: %s "
                           "(set rseq-emu-area)" % (AREA.value, e))


def _writable_ranges():
    """Writable mappings of the inferior, from /proc (None if unavailable)."""
    pid = gdb.selected_inferior().pid
    try:
        with open("/proc/%d/maps" % pid) as f:
            lines = f.readlines()
    except OSError:
        return None
    ranges = []
    for line in lines:
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if "w" in fields[1]:
            ranges.append([start, end])
    return ranges


def armed_section(pc=None):
    """(start_ip, post_commit_ip, abort_ip) of the armed section when `pc`
    (default: the current pc) is inside it, else None."""
    inf = gdb.selected_inferior()
    if pc is None:
        pc = _reg(gdb.selected_frame(), "rip")
    try:
        area = _rseq_area()
        cs = int.from_bytes(bytes(inf.read_memory(area + 8, 8)), "little")
        if cs == 0:
            return None
        d = bytes(inf.read_memory(cs, 32))
    except (gdb.MemoryError, RseqEmuError):
        return None
    start = int.from_bytes(d[8:16], "little")
    length = int.from_bytes(d[16:24], "little")
    abort = int.from_bytes(d[24:32], "little")
    if (pc - start) & MASK64 < length:
        return (start, start + length, abort)
    return None


def rseq_step(quiet=False):
    """Complete the armed section by emulation; returns the final answer."""
    SERVER.ensure()
    inf = gdb.selected_inferior()
    SERVER.send({"req": "emulate", "regs": _registers(),
                 "rseq_area": _rseq_area(), "signature": int(SIGNATURE.value),
                 "writable": _writable_ranges()})
    while True:
        msg = SERVER.recv()
        if msg.get("req") == "read":
            try:
                data = bytes(inf.read_memory(msg["addr"], msg["len"]))
                SERVER.send({"ok": True, "data": data.hex()})
            except gdb.MemoryError:
                SERVER.send({"ok": False})
            continue
        break
    status = msg.get("status")
    if status in ("committed", "exited"):
        for ins in msg["trace"]:
            if not quiet:
                gdb.write("  [rseq-emu] 0x%x: %s\n" % (ins["ip"], ins["insn"]))
        for w in msg["writes"]:
            inf.write_memory(w["addr"], bytes.fromhex(w["data"]))
        regs = msg["regs"]
        for name in GPRS + ["fs_base", "gs_base"]:
            gdb.execute("set $%s = %d" % (name, _signed(regs[name])), to_string=True)
        # Only the status flags and DF are emulated; keep the rest (TF, IF).
        owned = 0x8d5 | 0x400
        cur = _reg(gdb.selected_frame(), "eflags")
        gdb.execute("set $eflags = %d" % ((cur & ~owned) | (regs["eflags"] & owned)),
                    to_string=True)
        gdb.execute("set $rip = %d" % _signed(regs["rip"]), to_string=True)
        if not quiet:
            gdb.write("[rseq-emu] section %s %s after %d instructions; now at 0x%x\n" % (
                msg["section"]["descriptor"], status, len(msg["trace"]), regs["rip"]))
        return msg
    if status == "not-in-section":
        raise RseqEmuError("rseq-emu: not inside an armed critical section (%s)"
                           % msg.get("reason"))
    if status in ("unsupported", "fault", "budget-exceeded"):
        raise RseqEmuError(
            "rseq-emu: emulation stopped (%s: %s); nothing was changed, "
            "plain stepping here will be aborted by the kernel" % (status, msg.get("detail")))
    raise RseqEmuError("rseq-emu: %s: %s" % (status, msg.get("error") or msg.get("reason")))


def _signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


class RseqStep(gdb.Command):
    """Complete the current rseq critical section by emulation and stop at its exit."""

    def __init__(self):
        super().__init__("rseq-step", gdb.COMMAND_RUNNING)

    def invoke(self, arg, from_tty):
        rseq_step()


class RseqStepi(gdb.Command):
    """stepi, but complete an armed rseq critical section by emulation."""

    def __init__(self):
        super().__init__("rseq-stepi", gdb.COMMAND_RUNNING)

    def invoke(self, arg, from_tty):
        if armed_section() is not None:
            rseq_step()
        else:
            gdb.execute("stepi " + arg, from_tty)
            if armed_section() is not None and not STEPI.value:
                rseq_step()


def _on_stop(event):
    if not STEPI.value or not isinstance(event, gdb.StopEvent):
        return
    if isinstance(event, gdb.SignalEvent):
        return
    try:
        if armed_section() is not None:
            rseq_step()
    except gdb.GdbError as e:
        gdb.write("%s\n" % e)


class _StepiParam(gdb.Parameter):
    """Complete an armed rseq section whenever a stop lands inside it."""

    set_doc = "Set whether stops inside an rseq critical section complete it by emulation."
    show_doc = "Show whether stops inside an rseq critical section complete it by emulation."

    def __init__(self):
        super().__init__("rseq-emu-stepi", gdb.COMMAND_RUNNING, gdb.PARAM_BOOLEAN)
        self.value = False

    def get_set_string(self):
        return "rseq-emu-stepi is %s" % ("on" if self.value else "off")


STEPI = _StepiParam()
RseqStep()
RseqStepi()
gdb.events.stop.connect(_on_stop)
