"""The host side of the serial link: push a weight package to a device, read it back, infer.

* :mod:`export.serial.settings` -- :class:`~export.serial.settings.LinkSettings`, how the host
  drives the link (standard library only: the CLI reads its defaults from it);
* :mod:`export.serial.errors` -- the failures and the exit status of each;
* :mod:`export.serial.link` -- one open port: frames, sequence numbers, requests and replies;
* :mod:`export.serial.upload` -- one upload: the ``DATA`` sender and the read-back verifier;
* :mod:`export.serial.push` -- ``push``: handshake, upload, reconnections, commit, final check;
* :mod:`export.serial.infer` -- the device's active package and inference on it;
* :mod:`export.serial.cli` -- ``mark1 push`` and ``mark1 infer``.

Importing this package imports none of them (pyserial is imported by ``link``).
"""
