"""What a device holds, and a rollback to its other slot: ``mark1 status`` and ``mark1 rollback``.

Both speak only the protocol's messages (docs/PROTOCOL.md): ``HELLO``/``INFO`` for the device and
its limits, ``STATUS`` for the running model, the upload in progress and the flash wear,
``ROLLBACK`` with its check flag for whether the other slot holds a committed model, and a
``READ`` of that slot's package header for what that model is.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from export.contract import protocol as P
from export.contract.package import HEADER as PACKAGE_HEADER
from export.contract.package import PackageError, PackageHeader, peek_header
from export.serial.errors import DeviceRefused, LinkDown, LinkLost, VerifyFailed, refusal
from export.serial.link import Link, connect
from export.serial.settings import DEFAULT_SETTINGS, LinkSettings
from export.serial.trace import FrameTrace


@dataclass
class SlotView:
    """What one flash slot holds, as far as the protocol tells."""

    slot: str
    """``"A"`` or ``"B"``."""
    state: str
    """``"active"``, ``"committed"`` (a rollback can make it active), ``"uploading"``,
    ``"none"`` (no committed model) or ``"unknown"`` (the device does not know ``ROLLBACK``)."""
    size: int = 0
    """Image bytes (a committed or active model)."""
    crc32: int = 0
    model_id: str = ""
    """The package's model id, hex (from its header)."""
    n_inputs: int = 0
    n_outputs: int = 0
    ram_bytes: int = 0
    """Activation arena the model needs, in bytes."""
    format_version: int = 0
    """The package's format version (0: its header was not read)."""
    rounding: str = ""
    """How its dense layers requantize (``"single"``, ``"double"``; ``""``: header not read)."""
    note: str = ""
    """Why the slot holds no committed model, or what is unknown, in the device's words."""


@dataclass
class DeviceStatus:
    """A device's identity, limits, slots, upload in progress and flash wear."""

    port: str
    device: dict[str, Any]
    """The fields of its ``INFO``: name, protocol version and limits."""
    active_slot: str
    """``"A"``, ``"B"`` or ``"-"`` (none)."""
    runnable: bool
    slots: list[SlotView] = field(default_factory=list)
    upload: dict[str, int] | None = None
    """The upload in progress: slot, size, received (in order), durable (in flash)."""
    max_erase_count: int = 0
    total_erases: int = 0
    frames_ok: int = 0
    frames_bad: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _header(link: Link, slot: int) -> PackageHeader | None:
    """The package header at the start of ``slot`` (``ACTIVE_SLOT``: the running one), or
    ``None`` if the device does not let it be read or it is not one."""
    reply = link.call(P.Read(slot, 0, PACKAGE_HEADER.size))
    if not isinstance(reply, P.ReadData):
        return None
    try:
        return peek_header(reply.data)
    except PackageError:
        return None


def _fill(view: SlotView, head: PackageHeader | None) -> SlotView:
    if head is not None:
        view.size, view.model_id = head.total_size, head.model_id.hex()
        view.n_inputs, view.n_outputs, view.ram_bytes = head.n_inputs, head.n_outputs, \
            head.ram_bytes
        view.format_version, view.rounding = head.format_version, head.rounding
    return view


def _active_view(link: Link, st: P.Status) -> SlotView:
    view = _fill(SlotView(P.SLOT_NAMES[st.active_slot], "active"), _header(link, P.ACTIVE_SLOT))
    view.size, view.crc32, view.model_id = st.active_size, st.active_crc32, st.model_id.hex()
    if not st.runnable:
        view.note = "the device cannot run it"
    return view


def _other_view(link: Link, slot: int, st: P.Status) -> SlotView:
    """The view of a slot that is not active: a ``ROLLBACK`` check, then its header."""
    name = P.SLOT_NAMES[slot]
    reply = link.call(P.Rollback(slot, P.ROLLBACK_CHECK))
    if isinstance(reply, P.Ack) and reply.of == P.Msg.ROLLBACK:
        view = _fill(SlotView(name, "committed"), _header(link, slot))
        view.crc32 = reply.b
    elif isinstance(reply, P.Nak) and reply.code == P.Err.UNKNOWN_TYPE:
        view = SlotView(name, "unknown", note="the device's firmware predates ROLLBACK")
    elif isinstance(reply, P.Nak) and reply.code in (P.Err.NO_MODEL, P.Err.BAD_PACKAGE,
                                                       P.Err.TOO_LARGE_RAM):
        view = SlotView(name, "none", note=reply.describe())
    else:
        raise refusal(reply, "ROLLBACK (check)")
    if st.upload_slot == slot and view.state != "committed":
        view.state = "uploading"
    return view


def device_status(url: str, settings: LinkSettings = DEFAULT_SETTINGS,
                  trace: FrameTrace | None = None) -> DeviceStatus:
    """Ask the device at ``url`` what it holds (see :class:`DeviceStatus`)."""
    with connect(url, settings, trace) as link:
        try:
            info = link.info
            assert info is not None  # connect() shook hands
            st = link.status()
            slots = []
            for slot in (0, 1):
                if slot == st.active_slot:
                    slots.append(_active_view(link, st))
                else:
                    slots.append(_other_view(link, slot, st))
        except LinkDown as exc:
            raise LinkLost(f"asking {url} for its status: {exc}") from exc
    upload = None
    if st.upload_slot != P.ACTIVE_SLOT:
        upload = {"slot": st.upload_slot, "size": st.upload_size,
                  "received": st.upload_received, "durable": st.upload_durable}
    return DeviceStatus(url, asdict(info), P.SLOT_NAMES[st.active_slot], bool(st.runnable),
                        slots, upload, st.max_erase_count, st.total_erases, st.frames_ok,
                        st.frames_bad)


@dataclass
class RollbackReport:
    """What ``mark1 rollback`` did."""

    port: str
    device: str
    from_slot: str
    """The slot that ran before (``"-"``: none)."""
    to_slot: str
    changed: bool
    """False if ``to_slot`` was running already, or with ``check`` (nothing was written)."""
    checked_only: bool
    size: int
    crc32: int
    model_id: str
    """The model now running (with ``check``: the one that would), hex."""
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollback(url: str, slot: int | None = None, *, check: bool = False,
             settings: LinkSettings = DEFAULT_SETTINGS,
             trace: FrameTrace | None = None) -> RollbackReport:
    """Make ``slot`` (default: the one not running) the device's active slot again, if it holds
    a committed model; with ``check``, only ask whether it could.

    Raises :class:`~export.serial.errors.DeviceRefused` (exit status 9) when the device refuses
    (no committed model there, or firmware that predates ``ROLLBACK``), and the other errors
    of :mod:`export.serial.errors`.
    """
    t0 = time.monotonic()
    with connect(url, settings, trace) as link:
        try:
            info = link.info
            assert info is not None
            before = link.status()
            active = before.active_slot
            target = slot if slot is not None else (1 if active == 0 else 0)
            if target not in (0, 1):
                raise ValueError(f"slot {target}: a device has slots 0 (A) and 1 (B)")
            reply = link.call(P.Rollback(target, P.ROLLBACK_CHECK if check else 0))
            if isinstance(reply, P.Nak) and reply.code == P.Err.UNKNOWN_TYPE:
                raise DeviceRefused(
                    f"device {info.name} on {url} does not know ROLLBACK: its firmware "
                    "predates it (push and infer work as before)", reply)
            if not (isinstance(reply, P.Ack) and reply.of == P.Msg.ROLLBACK):
                raise refusal(reply, f"ROLLBACK to slot {P.SLOT_NAMES[target]}")
            after = before if check else link.status()
            if check:
                view = _fill(SlotView(P.SLOT_NAMES[target], "committed"), _header(link, target))
                size, model_id = view.size, view.model_id
            else:
                if (after.active_slot, after.active_crc32) != (target, reply.b) or \
                        not after.runnable:
                    raise VerifyFailed(
                        f"after ROLLBACK the device runs slot {P.SLOT_NAMES[after.active_slot]}"
                        f" (CRC-32 {after.active_crc32:#010x}, runnable {after.runnable}); "
                        f"expected slot {P.SLOT_NAMES[target]} (CRC-32 {reply.b:#010x})")
                size, model_id = after.active_size, after.model_id.hex()
        except LinkDown as exc:
            raise LinkLost(f"rollback on {url}: {exc}") from exc
    return RollbackReport(url, info.name, P.SLOT_NAMES[active], P.SLOT_NAMES[target],
                          changed=not check and target != active, checked_only=check,
                          size=size, crc32=reply.b, model_id=model_id,
                          seconds=time.monotonic() - t0)
