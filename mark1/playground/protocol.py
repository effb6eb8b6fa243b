"""The messages between the playground's page and its server: their fields, limits and encodings.

The page sends JSON objects, one per WebSocket text message, each with a ``type`` (a command
of :data:`COMMANDS`) and optionally an ``id`` (a number or a short string) that the server's
first answer to it carries back as ``re``. The server answers with JSON objects of type
``welcome`` (once), ``frame`` (the machine as it is now), ``teach``/``look`` (what one card
did), ``xor`` (the XOR race), ``busy`` (a slow command has started) and ``error``.

Anything else is refused with an ``error`` message naming the value and what is allowed, and
the tab goes on: :func:`parse` raises :class:`BadMessage` for a message too large, not JSON,
of an unknown type, with a missing, unknown or out-of-range field. Arrays travel as base64:
8-bit levels (:func:`levels`) or bits (:func:`bits`, :func:`unbits`).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mark1.presets import PRESETS
from mark1.stimuli import TASKS

MAX_MESSAGE_BYTES = 64 * 1024
"""Largest message read (a drawing is about 2 kB); larger ones are refused unread."""

N_CELLS = 400
"""Cells of a drawing (the 20 x 20 retina)."""

SPEEDS: dict[str, float] = {
    "1960": 0.0, "1": 1.0, "5": 5.0, "20": 20.0, "100": 100.0, "1000": 1000.0, "max": math.inf,
}
"""Speeds by name, in trials a second: ``1960`` runs at the physical machine's own pace (its
clock: the card change, the dwell and the motors), ``max`` as fast as the server can."""

DEFAULT_SPEED = "20"
"""The speed a tab starts at."""


@dataclass(frozen=True)
class Slider:
    """A machine parameter the page sets with a slider."""

    label: str
    """What the page calls it."""
    unit: str
    """Its unit."""
    low: float
    """Least value allowed."""
    high: float
    """Greatest value allowed."""
    step: float
    """Slider resolution."""
    whole: bool = False
    """A whole number."""


SLIDERS: dict[str, Slider] = {
    "step": Slider("pot step", "sum units / motor step", 0.002, 0.2, 0.002),
    "backlash_steps": Slider("backlash", "steps", 0.0, 4.0, 0.1),
    "stuck_fraction": Slider("stuck wipers", "fraction", 0.0, 0.5, 0.01),
    "read_noise": Slider("contact noise", "sum units (sd)", 0.0, 0.1, 0.001),
    "drift_sd": Slider("pot drift", "sum units / hour (sd)", 0.0, 2.0, 0.01),
    "r10_spread": Slider("cell spread (R10)", "fraction", 0.0, 0.9, 0.01),
    "dead_fraction": Slider("dead cells", "fraction", 0.0, 0.5, 0.005),
    "dwell_s": Slider("card dwell", "s", 0.005, 0.5, 0.005),
    "rise_s": Slider("cell rise time", "s", 0.0, 0.3, 0.005),
    "n_a": Slider("A-units", "units", 8, 2048, 8, whole=True),
}
"""The parameters the page offers as sliders: machine parameters of
:data:`mark1.presets.PARAMETERS`, and ``n_a`` (the estimator's A-units). A change rewires the
tab's machine (its parts are built with their spreads)."""

RULE_NAMES = ("error-correction", "forced-response", "ideal")
"""Training rules offered (those of :data:`mark1.training.RULES`)."""

XOR_ACTIONS = ("play", "pause", "step", "reset")
"""What the XOR race does on the page's buttons."""


class BadMessage(ValueError):
    """A message the server refuses; ``id`` is the message's own, when it had one."""

    def __init__(self, message: str, id: object = None) -> None:
        super().__init__(message)
        self.id = id


@dataclass
class Command:
    """A parsed, checked message from the page."""

    type: str
    """One of :data:`COMMANDS`."""
    id: int | str | None = None
    """The page's own tag, answered as ``re``."""
    args: dict[str, Any] = field(default_factory=dict)
    """The command's checked fields."""


def _choice(allowed: tuple[str, ...] | list[str]) -> Any:
    def check(name: str, value: object) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"{name} {value!r} is not allowed; allowed: {', '.join(allowed)}")
        return value
    return check


def _whole(low: int, high: int) -> Any:
    def check(name: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be a whole number in [{low}, {high}]; got {value!r}")
        return value
    return check


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _card(name: str, value: object) -> int | str:
    if value in ("next", "random"):
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a card number >= 0, 'next' or 'random'; got {value!r}")
    return value


def _cells(name: str, value: object) -> np.ndarray:
    if not isinstance(value, list) or len(value) != N_CELLS:
        got = f"{len(value)} values" if isinstance(value, list) else type(value).__name__
        raise ValueError(f"{name} must be a list of {N_CELLS} numbers (20 x 20 cells, row by "
                         f"row); got {got}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must hold numbers between 0 and 1 only")
    cells = np.array(value, dtype=np.float64)
    if not (np.isfinite(cells).all() and (cells >= 0).all() and (cells <= 1).all()):
        raise ValueError(f"{name} must hold numbers between 0 and 1 (relative light)")
    return cells


def _speed(name: str, value: object) -> str:
    return _choice(list(SPEEDS))(name, str(value) if isinstance(value, (int, float)) and not
                                 isinstance(value, bool) and float(value).is_integer() else value)


COMMANDS: dict[str, dict[str, Any]] = {
    "play": {}, "pause": {}, "step": {}, "pass": {}, "reset": {}, "look": {}, "test": {},
    "speed": {"value": _speed},
    "task": {"name": _choice(list(TASKS))},
    "preset": {"name": _choice(list(PRESETS))},
    "rule": {"name": _choice(RULE_NAMES)},
    "param": {"name": _choice(list(SLIDERS)), "value": _number},
    "seed": {"value": _whole(0, 2**31 - 1)},
    "card": {"index": _card},
    "draw": {"cells": _cells},
    "teach": {"label": _whole(0, 255)},
    "xor": {"action": _choice(XOR_ACTIONS)},
}
"""Every command the page may send, with its fields and their checks (``id`` is optional on
every one)."""


def parse(data: str | bytes) -> Command:
    """Check one message from the page; raise :class:`BadMessage` saying what is wrong."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message of {len(data):,} bytes is too large (at most "
                         f"{MAX_MESSAGE_BYTES:,})")
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMessage(f"message is not JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(message, dict):
        raise BadMessage(f"a message must be a JSON object; got {type(message).__name__}")
    tag = message.get("id")
    if tag is not None and (isinstance(tag, bool) or not isinstance(tag, (int, str)) or
                            isinstance(tag, str) and len(tag) > 64):
        raise BadMessage(f"id must be a number or a string of at most 64 characters; got "
                         f"{str(tag)[:40]!r}")
    kind = message.get("type")
    if kind not in COMMANDS:
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else str(kind)[:40]
        raise BadMessage(f"unknown message type {shown!r}; allowed: {', '.join(COMMANDS)}", tag)
    fields = COMMANDS[kind]
    extra = sorted(set(message) - set(fields) - {"type", "id"})
    if extra:
        allowed = ", ".join(["id", *fields])
        raise BadMessage(f"unknown field {extra[0][:40]!r} for {kind!r}; allowed: {allowed}", tag)
    args: dict[str, Any] = {}
    for name, check in fields.items():
        if name not in message:
            raise BadMessage(f"{kind!r} needs the field {name!r}", tag)
        try:
            args[name] = check(name, message[name])
        except ValueError as exc:
            raise BadMessage(f"{kind}: {exc}", tag) from None
    return Command(kind, tag, args)


# ---------------------------------------------------------------------- array encodings


def levels(values: np.ndarray, low: float, high: float) -> str:
    """``values`` as 8-bit levels between ``low`` (0) and ``high`` (255), base64."""
    span = high - low
    scaled = (np.asarray(values, dtype=np.float64) - low) * (255.0 / span if span > 0 else 0.0)
    return base64.b64encode(np.clip(np.nan_to_num(scaled), 0, 255).round().astype(
        np.uint8).tobytes()).decode("ascii")


def bits(flags: np.ndarray) -> str:
    """Bool array (flattened, row by row) as bits, first flag in the top bit, base64."""
    return base64.b64encode(np.packbits(np.asarray(flags, dtype=bool).ravel()).tobytes()).decode(
        "ascii")


def unbits(text: str, n: int) -> np.ndarray:
    """The first ``n`` flags of :func:`bits`' encoding."""
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def unlevels(text: str, low: float, high: float) -> np.ndarray:
    """The values of :func:`levels`' encoding (to 1/255 of the span)."""
    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8).astype(np.float64)
    return low + raw * ((high - low) / 255.0)
