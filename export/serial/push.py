"""``push``: upload a weight package to a device, verify it, make it active.

The upload (:mod:`export.serial.upload`) keeps ``window`` ``DATA`` frames in flight and reads
back what the device has written while it runs. A lost link -- ``retries`` silences in a row or
an I/O error -- reopens the port and ``BEGIN``, naming the image by its SHA-256, resumes from
the device's offset; once every byte is in flash, the reopened link repeats ``COMMIT`` (which
names the image too: the device acknowledges it again if that image is already the active one)
instead. A final ``STATUS`` checks that the device runs the pushed model.

Failures raise the :class:`~mark1.errors.Mark1Error` subclasses of :mod:`export.serial.errors`,
whose ``exit_code`` the CLI returns.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

from export.contract import protocol as P
from export.contract.package import decode_package
from export.serial.errors import (
    DeviceBusy,
    LinkDown,
    LinkLost,
    NoDevice,
    VerifyFailed,
    refusal,
)
from export.serial.link import Link
from export.serial.report import PushReport
from export.serial.settings import DEFAULT_SETTINGS, LinkSettings
from export.serial.trace import FrameTrace
from export.serial.upload import Upload


def push(
    url: str,
    image: bytes,
    *,
    settings: LinkSettings = DEFAULT_SETTINGS,
    slot: int = P.AUTO_SLOT,
    progress: Callable[[int], None] | None = None,
    trace: FrameTrace | None = None,
) -> PushReport:
    """Upload a weight package to the device at ``url``, verify it, make it active.

    ``image`` must decode as a package (``PackageError``, a ``ValueError``, if not). ``progress``
    is called with the number of newly acknowledged bytes; ``trace`` logs every frame of every
    connection (``--trace``). Returns a :class:`PushReport`; raises
    the ``Mark1Error`` subclasses of :mod:`export.serial.errors` on failure.
    """
    if not isinstance(image, (bytes, bytearray, memoryview)):
        raise TypeError(f"image must be the package's bytes; got {type(image).__name__} "
                        "(read the file first)")
    image = bytes(image)
    pkg = decode_package(image)
    report = PushReport(url, len(image), zlib.crc32(image), pkg.model_id.hex(),
                        baud=settings.baud)
    up = Upload(image, report, settings, progress)
    t0 = time.monotonic()
    link = Link(url, settings, trace=trace)
    try:
        info = link.handshake()
        report.device = info.name
        delay = settings.reconnect_delay_s
        sent = False  # every byte is in the device's flash and verified: COMMIT is next
        while True:
            try:
                just_sent = not sent
                if not sent:
                    up.run(link, slot, pkg.ram_bytes)
                    sent = True
                done = link.call(P.Commit(len(image), report.crc32, up.image_id))
                if isinstance(done, P.Nak) and done.code == P.Err.NO_UPLOAD:
                    sent = False  # neither in progress nor committed: the upload was lost
                    if just_sent:  # lost between the last DATA and COMMIT: a reset
                        raise LinkDown("the device forgot the upload before COMMIT (reset or "
                                    "power cycle)")
                    continue  # (after a reconnection) send it again on this link
                if not (isinstance(done, P.Ack) and done.of == P.Msg.COMMIT):
                    raise refusal(done, "COMMIT")
                slot_used = done.a
                st = link.status()
                break
            except LinkDown as exc:
                if report.reconnects >= settings.reconnects:
                    raise LinkLost(
                        f"link to {url} lost ({exc}); gave up after {report.reconnects} "
                        f"reconnection(s) at byte {up.acked} of {len(image)}"
                    ) from exc
                report.reconnects += 1
                link.close()
                _tally(report, link)
                time.sleep(delay)
                delay *= 2
                link = _reopen(url, settings, attempts=settings.retries + 1, seq=link.seq,
                               trace=trace)
        report.seconds = time.monotonic() - t0
        report.slot = slot_used
        _check_active(st, report, pkg.model_id, slot_used)
    finally:
        link.close()
        _tally(report, link)
    return report


def _tally(report: PushReport, link: Link) -> None:
    report.wire_bytes_out += link.bytes_out
    report.wire_bytes_in += link.bytes_in
    link.bytes_out = link.bytes_in = 0


def _reopen(url: str, settings: LinkSettings, attempts: int, seq: int,
            trace: FrameTrace | None = None) -> Link:
    """Open the port and shake hands again; waits for a device that is restarting."""
    last: BaseException | None = None
    for i in range(attempts):
        try:
            link = Link(url, settings, seq=seq + 1000 * (i + 1), trace=trace)
        except (ValueError, DeviceBusy) as exc:
            last = exc
            time.sleep(settings.reconnect_delay_s * (i + 1))
            continue
        try:
            link.handshake(attempts=2)
            return link
        except (NoDevice, DeviceBusy, LinkDown) as exc:
            last = exc
            link.close()
            time.sleep(settings.reconnect_delay_s * (i + 1))
    raise LinkLost(f"could not reconnect to {url}: {last}")


def _check_active(st: P.Status, report: PushReport, model_id: bytes, slot: int) -> None:
    problems = []
    if st.active_slot != slot:
        problems.append(f"active slot {P.SLOT_NAMES.get(st.active_slot)} != {P.SLOT_NAMES[slot]}")
    if (st.active_size, st.active_crc32) != (report.size, report.crc32):
        problems.append(f"active image {st.active_size} bytes CRC {st.active_crc32:#010x}, "
                        f"pushed {report.size} bytes CRC {report.crc32:#010x}")
    if st.model_id != model_id:
        problems.append(f"model id {st.model_id.hex()[:16]} != {model_id.hex()[:16]}")
    if not st.runnable:
        problems.append("the device cannot run the model")
    if problems:
        raise VerifyFailed("after commit: " + "; ".join(problems))
