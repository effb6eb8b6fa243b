"""Imported by the fork server that forks the local worker processes of a sweep
(``multiprocessing``'s ``set_forkserver_preload``): it warms the server up once
(:func:`mark1.sweeps.worker.warm_up`), and every worker forked from it starts with the compiled
epochs loaded and the glyphs rendered, instead of loading them itself."""

from mark1.sweeps.worker import warm_up

warm_up()
