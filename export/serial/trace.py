"""A readable log of the frames on a link (``mark1 push --trace FILE``, ``mark1 infer --trace``).

One line per frame, in the order the host wrote or decoded them::

    #  time (s)  dir  type          seq    bytes  fields
      0.000412   ->  HELLO           1        2  version=2
      0.001838   <-  INFO            1       43  version=2 max_payload=1024 ... name='mark1-sim'
      0.002931   ->  DATA            3      512  offset=0 data=508 B 4d 31 57 50 01 00 50 00 ...
      0.004127   <-  NAK             9       40  of=COMMIT code=INCOMPLETE a=8 b=27604 text=...
      0.210000   !!  dropped a damaged chunk: frame CRC 0x1234abcd does not match 0x...

``time`` is seconds since the trace began (the first port opened), ``->`` host to device,
``<-`` device to host, ``!!`` a chunk the host's decoder dropped, ``--`` an event of the link
(opened, closed, reconnected). ``bytes`` is the payload's length; the fields are the payload
decoded by :mod:`export.contract.protocol` (slots as A/B, CRCs in hex, ``of`` and ``code`` by
name, byte strings as their length and first bytes). A payload that does not decode is shown
as hex with the reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import TYPE_CHECKING, TextIO

from export.contract import protocol as P

if TYPE_CHECKING:
    from mark1.io import OutputPlan

ARROWS = {"host": "->", "device": "<-"}
"""Direction marks: frames the host wrote, frames it received."""
PREVIEW_BYTES = 8
"""Bytes of a byte string shown in hex (the rest is counted)."""
_SLOT_FIELDS = ("slot", "active_slot", "upload_slot")
_SLOT_FF = {P.Begin: "auto", P.Read: "active", P.Status: "none", P.Rollback: "0xff"}
"""What slot number 0xFF means in each payload."""


def _bytes(name: str, value: bytes) -> str:
    if name.endswith("_id"):  # a SHA-256: its first 8 bytes, as the CLI prints ids
        return value.hex()[: 2 * PREVIEW_BYTES] + ("..." if len(value) > PREVIEW_BYTES else "")
    head = value[:PREVIEW_BYTES].hex(" ")
    more = " ..." if len(value) > PREVIEW_BYTES else ""
    return f"{len(value)} B" + (f" {head}{more}" if value else "")


def _field(name: str, value: object, payload: P.Payload) -> str:
    if isinstance(value, bytes):
        return _bytes(name, value)
    if isinstance(value, str):
        return repr(value)
    assert isinstance(value, int)
    if name == "of":
        return _name_of(value)
    if name == "code" and isinstance(payload, P.Nak):
        try:
            return P.Err(value).name
        except ValueError:
            return str(value)
    if name in _SLOT_FIELDS:
        if value in (0, 1):
            return P.SLOT_NAMES[value]
        return _SLOT_FF.get(type(payload), "0xff") if value == 0xFF else str(value)
    if "crc32" in name or (name == "b" and isinstance(payload, P.Ack)
                           and payload.of in (P.Msg.COMMIT, P.Msg.ROLLBACK)):
        return f"{value:#010x}"  # (an ACK of COMMIT or ROLLBACK: b is the image's CRC-32)
    if name == "flags" and isinstance(payload, P.Rollback):
        return "check" if value == P.ROLLBACK_CHECK else f"{value:#04x}"
    return str(value)


def _name_of(ftype: int) -> str:
    try:
        return P.Msg(ftype).name
    except ValueError:
        return f"{ftype:#04x}"


def describe(frame: P.Frame) -> str:
    """The fields of ``frame``'s payload, decoded, as ``name=value`` words."""
    cls = P.REQUESTS.get(frame.type) or P.REPLIES.get(frame.type)
    if cls is None:
        if frame.type in P.EMPTY_REQUESTS and not frame.payload:
            return ""
        return f"payload {_bytes('payload', frame.payload)}" if frame.payload else ""
    try:
        payload = cls.unpack(frame.payload)
    except P.ProtocolError as exc:
        return f"malformed ({exc}): {_bytes('payload', frame.payload)}"
    return " ".join(f"{f.name}={_field(f.name, getattr(payload, f.name), payload)}"
                    for f in fields(payload))  # type: ignore[arg-type]


class FrameTrace:
    """Writes one line per frame to ``out`` (a text file open for writing)."""

    HEADING = "#  time (s)  dir  type            seq   bytes  fields\n"

    def __init__(self, out: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.clock = clock
        self.t0: float | None = None
        """When the first line was logged: times count from there."""
        self.lines = 0
        """Lines written (the heading not counted)."""
        out.write(self.HEADING)

    def _line(self, mark: str, text: str) -> None:
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        self.out.write(f"{now - self.t0:11.6f}  {mark}  {text}".rstrip() + "\n")
        self.lines += 1

    def frame(self, sender: str, frame: P.Frame) -> None:
        """Log ``frame``, sent by ``sender`` (``"host"`` or ``"device"``)."""
        self._line(ARROWS[sender], f"{_name_of(frame.type):<12s} {frame.seq:>6d} "
                                   f"{len(frame.payload):>7d}  {describe(frame)}")

    def dropped(self, count: int, why: str) -> None:
        """Log ``count`` chunks the decoder dropped, the last for ``why``."""
        what = "a damaged chunk" if count == 1 else f"{count} damaged chunks, the last"
        self._line("!!", f"dropped {what}: {why}")

    def note(self, text: str) -> None:
        """Log an event of the link (port opened or closed, a reconnection)."""
        self._line("--", text)
        self.out.flush()


@contextmanager
def trace_file(plan: OutputPlan, path: str | os.PathLike[str] | None
               ) -> Iterator[FrameTrace | None]:
    """A :class:`FrameTrace` into the output file ``path`` of ``plan`` (``None``: no trace),
    declared there with ``keep_on_error`` and written into its staging: the plan moves it into
    place when the run ends -- also when it ends by an error or Ctrl-C, whose trace is what the
    file is for. A trace is never half-written under its own name."""
    if path is None:
        yield None
        return
    with open(plan.staged(path), "w", encoding="utf-8") as out:
        trace = FrameTrace(out)
        try:
            yield trace
        finally:
            trace.note("end")
