"""The contract between host and device: what both sides import, and nothing else.

* :mod:`export.contract.package` -- the int8 weight package (``.m1w``), ``docs/PACKAGE.md``;
* :mod:`export.contract.golden` -- the golden integer reference: the device's arithmetic;
* :mod:`export.contract.codebook` -- the codebook decision a package's head makes;
* :mod:`export.contract.protocol` -- the wire protocol, ``docs/PROTOCOL.md``, framed by
  :mod:`export.contract.cobs`;
* :mod:`export.contract.ranges` -- the byte-range sets of the resumable upload.

Only numpy and the standard library are imported here: the contract depends on nothing else of
the project, so the host (``export/``) and the device (``firmware_sim/``) can both rely on it.
"""
