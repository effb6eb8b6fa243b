"""The kit's version (``mark1.__version__``), in a module of its own so that any part of the
kit can name it without importing the package's public face."""

__version__ = "0.1.0"
