"""The Mark I in a browser: ``mark1 playground``, a local web server with one machine per tab.

:mod:`~mark1.playground.tab` is a tab's machine and what the page shows of it (numpy only);
:mod:`~mark1.playground.trial` watches one trial of a machine through its public parts;
:mod:`~mark1.playground.xor` races one layer, the Mark I and an MLP on XOR;
:mod:`~mark1.playground.protocol` is the page's messages; :mod:`~mark1.playground.server` the
web server (Starlette on uvicorn: ``pip install 'mark1-kit[playground]'``), and ``static/``
the page (plain JavaScript, nothing fetched from elsewhere). Importing this package imports
none of them.
"""

MAX_TABS = 64
"""Tabs (machines) a server holds at once unless told otherwise."""
