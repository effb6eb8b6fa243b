"""Failures of the serial link, the exit status the CLI returns for each, and how a device's
reply maps to them.

Bad input raises ``ValueError`` (exit status 2); the failures below are not the caller's input.
"""

from __future__ import annotations

from typing import TypeVar

from export.contract import protocol as P
from mark1.errors import Mark1Error

EXIT_CODES: dict[int, str] = {
    0: "success",
    2: "bad input: unreadable or invalid package, bad option, port that cannot be opened",
    3: "no device answering on the port",
    4: "protocol version mismatch between host and device",
    5: "model too large for the device's flash slot or RAM arena (sizes in the message)",
    6: "verification failed: read-back, CRC or device outputs differ from the reference",
    7: "link lost: no progress after all retries and reconnections",
    8: "device busy: another host holds its session",
    9: "device refused the request (the message gives its reason)",
}
"""Exit status of ``mark1 push`` and ``mark1 infer`` for each kind of failure."""


class NoDevice(Mark1Error):
    """Nothing answered HELLO on the port."""

    exit_code = 3


class VersionMismatch(Mark1Error):
    """The device speaks another protocol version."""

    exit_code = 4


class ModelTooLarge(Mark1Error):
    """The model does not fit the device's flash slot or RAM arena."""

    exit_code = 5


class VerifyFailed(Mark1Error):
    """What the device holds or computes differs from what it should."""

    exit_code = 6


class LinkLost(Mark1Error):
    """The link failed after all retries and reconnections."""

    exit_code = 7


class DeviceBusy(Mark1Error):
    """Another host holds the device's session."""

    exit_code = 8


class DeviceRefused(Mark1Error):
    """The device answered a request with a NAK not covered above."""

    exit_code = 9

    def __init__(self, message: str, nak: P.Nak | None = None) -> None:
        super().__init__(message)
        self.nak = nak


class LinkDown(LinkLost):
    """The link stopped working (I/O error or no reply after all retries); a push reconnects."""


ReplyT = TypeVar("ReplyT", bound=P.Payload)


def unless_busy(reply: P.Payload) -> P.Payload:
    """``reply``, unless it says that another host holds the device (:class:`DeviceBusy`)."""
    if isinstance(reply, P.Nak) and reply.code == P.Err.BUSY:
        raise DeviceBusy(f"device busy: {reply.describe()}")
    return reply


def expect(reply: P.Payload, cls: type[ReplyT], what: str) -> ReplyT:
    """``reply`` if it is a ``cls``; else the error :func:`refusal` gives."""
    if isinstance(reply, cls):
        return reply
    raise refusal(reply, what)


def refusal(reply: P.Payload, what: str) -> Mark1Error:
    """The error for an unexpected reply (a ``NAK`` becomes the matching error class)."""
    if not isinstance(reply, P.Nak):
        return DeviceRefused(f"{what}: unexpected reply {type(reply).__name__}")
    text = f"device refused {what}: {reply.describe()}"
    if reply.code in (P.Err.TOO_LARGE_FLASH, P.Err.TOO_LARGE_RAM):
        return ModelTooLarge(text)
    if reply.code == P.Err.CRC_MISMATCH:
        return VerifyFailed(text)
    if reply.code == P.Err.BUSY:
        return DeviceBusy(text)
    return DeviceRefused(text, reply)
