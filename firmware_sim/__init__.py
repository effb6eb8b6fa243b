"""The device: the simulated microcontroller (flash with A/B model slots, a RAM budget, an
integer engine, serving the mark1-kit wire protocol on a pty or a TCP socket), and the C
firmware that implements the same device (``firmware_sim/c``, built by ``firmware.py``)."""
