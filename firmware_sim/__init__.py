"""The simulated microcontroller: flash with A/B model slots, a RAM budget, an integer engine,
serving the mark1-kit wire protocol on a pty or a TCP socket."""
