"""Replay every recorded gdb-multiarch session (tests/sessions/*.rsp) against a fresh server."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from gdbstub.transcript import ReplayMismatch, Step, Transcript, load, replay, show, unshow
from tests.conftest import ROOT, ServerProcess

SESSIONS = Path(__file__).resolve().parent
TRANSCRIPTS = sorted(SESSIONS.glob("*.rsp"))


def _server_for(t: Transcript, guest_elf: Callable[[str], Path]) -> ServerProcess:
    if t.image.startswith("guests/build/"):
        guest_elf(Path(t.image).stem)
    digest = hashlib.sha256((ROOT / t.image).read_bytes()).hexdigest()
    assert digest == t.image_sha256, (
        f"{t.image} changed since {t.path.name} was recorded: re-record with scripts/record-sessions"
    )
    return ServerProcess(*t.options)


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_replay(path: Path, guest_elf: Callable[[str], Path]) -> None:
    t = load(path)
    server = _server_for(t, guest_elf)
    try:
        checked = replay(t, ("127.0.0.1", server.port))
        assert server.proc.poll() is None, "the server died during the replay"
    finally:
        server.stop()
    assert checked == sum(1 for c in t.connections for s in c if s.who != ">")


def test_the_corpus_covers_what_it_should() -> None:
    names = {p.stem for p in TRANSCRIPTS}
    assert len(names) >= 25
    assert names == {p.stem for p in SESSIONS.glob("*.gdb")}, "every command file has its transcript"
    text = "\n".join(p.read_text() for p in TRANSCRIPTS)
    wanted = ["$Z0,", "$Z1,", "$Z2,", "$Z3,", "$Z4,", "$z0,", "$z1,", "$z2,", "$z3,", "$z4,", "> ^C", "$vCont;s",
              "$vCont;c", "$D", "$vKill", "$qRcmd,", "$QStartNoAckMode", "$qXfer:features"]  # fmt: skip
    for packet in wanted:
        assert packet in text, f"no recorded session sends {packet}"
    assert "$T05watch:" in text and "$T05rwatch:" in text and "$T05awatch:" in text and "hwbreak:;" in text
    assert "$T02" in text and "$W00" in text and "$T04" in text and "$T0b" in text


def test_a_changed_reply_is_reported_with_both_sides_and_its_index(guest_elf: Callable[[str], Path]) -> None:
    t = load(SESSIONS / "connect.rsp")
    steps = t.connections[0]
    i = next(n for n, s in enumerate(steps) if s.text.startswith("$PacketSize="))
    steps[i] = Step("<", "$PacketSize=1000;QStartNoAckMode+", steps[i].line)
    server = _server_for(t, guest_elf)
    try:
        with pytest.raises(ReplayMismatch) as err:
            replay(t, ("127.0.0.1", server.port))
    finally:
        server.stop()
    message = str(err.value)
    assert f"item {i} (line {steps[i].line}) differs" in message
    assert "recorded: < $PacketSize=1000;QStartNoAckMode+" in message
    assert "replayed: < $PacketSize=4000;QStartNoAckMode+" in message


def test_show_round_trips_and_wildcards_match_only_their_field() -> None:
    raw = bytes(range(256))
    assert unshow(show(raw)) == raw
    assert "\n" not in show(raw)
    step = Step("~", "$T05thread:1;20:{*};1f:0000000000000000;", 1)
    assert step.matches(b"$T05thread:1;20:2000004000000000;1f:0000000000000000;")
    assert not step.matches(b"$T05thread:1;20:2000004000000000;1f:1000000000000000;")
    assert Step("<", "$OK", 1).matches(b"$OK") and not Step("<", "$OK", 1).matches(b"$E22")
