"""Tasks on the retina: seeded light images with labels and train/test splits.

Each task returns images as relative illuminance in [0, 1] on the 20 x 20 retina (figure lit,
ground dark, as a projected or back-lit card), rendered by area coverage: every cell's value
is the fraction of it that the figure covers (4 x 4 sub-samples per cell).

Tasks (see :data:`TASKS`): ``left-right``, ``square-circle``, ``square-diamond``, ``e-f``,
``letters``, ``xor`` and ``digits`` (scikit-learn's 8 x 8 handwritten digits, real data,
projected onto the retina).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from mark1.images import N_CELLS, RETINA_SHAPE, to_retina
from mark1.limits import SEED, Limit, check_memory, check_table

_SUB = 4  # sub-samples per cell along each axis
_ROWS, _COLS = RETINA_SHAPE


@dataclass(frozen=True)
class Task:
    """A labelled retina task with a train/test split."""

    name: str
    """Task name, as given to :func:`make_task`."""
    X_train: np.ndarray = field(repr=False)
    """Training images, float64 (n_train, 20, 20), relative illuminance in [0, 1]."""
    y_train: np.ndarray = field(repr=False)
    """Training labels, int64 indices into :attr:`classes`."""
    X_test: np.ndarray = field(repr=False)
    """Test images, float64 (n_test, 20, 20)."""
    y_test: np.ndarray = field(repr=False)
    """Test labels, int64 indices into :attr:`classes`."""
    classes: tuple[str, ...]
    """Human-readable class names; label ``k`` means ``classes[k]``."""
    seed: int
    """Seed the task was generated from."""
    description: str = ""
    """One line on what the task is and where its data comes from."""

    @property
    def n_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.y_test.shape[0])


# --------------------------------------------------------------------------- rendering


def _sample_points() -> np.ndarray:
    """Sub-sample centres in retina coordinates (x = column, y = row, cell units)."""
    off = (np.arange(_SUB) + 0.5) / _SUB
    ys = (np.arange(_ROWS)[:, None] + off[None, :]).ravel()
    xs = (np.arange(_COLS)[:, None] + off[None, :]).ravel()
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


_POINTS = _sample_points()


def _coverage(inside: np.ndarray) -> np.ndarray:
    """Boolean mask over the sub-sample grid -> fraction covered per cell (20, 20)."""
    return inside.reshape(_ROWS, _SUB, _COLS, _SUB).mean(axis=(1, 3))


def _polygons_inside(polys: list[np.ndarray], pts: np.ndarray) -> np.ndarray:
    """Even-odd rule over several closed polygons (holes in glyphs count correctly)."""
    from matplotlib.path import Path

    count = np.zeros(len(pts), dtype=np.int64)
    for poly in polys:
        count += Path(poly).contains_points(pts)
    return (count % 2) == 1


def _rotation(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _square(cx: float, cy: float, side: float, theta: float) -> np.ndarray:
    local = (_POINTS - [cx, cy]) @ _rotation(theta)  # rotate points by -theta
    inside = (np.abs(local) <= side / 2).all(axis=1)
    return _coverage(inside)


def _disc(cx: float, cy: float, radius: float) -> np.ndarray:
    inside = ((_POINTS - [cx, cy]) ** 2).sum(axis=1) <= radius**2
    return _coverage(inside)


TYPEFACES: dict[str, str] = {
    "sans": "DejaVu Sans",
    "serif": "DejaVu Serif",
    "mono": "DejaVu Sans Mono",
}
"""Typefaces for letter tasks (fonts shipped with matplotlib, so every machine has them)."""


@lru_cache(maxsize=256)
def _glyph(char: str, typeface: str) -> tuple[np.ndarray, ...]:
    """Outline polygons of a capital letter, centred on its box and scaled to unit height."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    path = TextPath((0, 0), char, size=1.0, prop=FontProperties(family=TYPEFACES[typeface]))
    box = path.get_extents()
    centre = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])
    height = box.y1 - box.y0
    polys = []
    for poly in path.to_polygons(closed_only=True):
        p = (poly - centre) / height
        p[:, 1] = -p[:, 1]  # image rows grow downwards
        polys.append(p)
    return tuple(polys)


def _letter(char: str, typeface: str, cx: float, cy: float, height: float) -> np.ndarray:
    polys = [p * height + [cx, cy] for p in _glyph(char, typeface)]
    return _coverage(_polygons_inside(polys, _POINTS))


# --------------------------------------------------------------------------- tasks


def _balanced_labels(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.arange(n) % k
    rng.shuffle(labels)
    return labels


def _left_right(n: int, rng: np.random.Generator, **_: object) -> tuple[np.ndarray, np.ndarray]:
    y = _balanced_labels(n, 2, rng)
    X = np.empty((n, _ROWS, _COLS))
    for i, label in enumerate(y):
        side = rng.uniform(3.0, 5.0)
        half = side / 2
        cx = rng.uniform(half + 0.5, 9.0 - half) if label == 0 else rng.uniform(
            11.0 + half, _COLS - half - 0.5
        )
        cy = rng.uniform(half + 0.5, _ROWS - half - 0.5)
        X[i] = _square(cx, cy, side, 0.0)
    return X, y


def _square_other(
    n: int,
    rng: np.random.Generator,
    other: str,
    rotate: float,
    shift: float | None = None,
    **_: object,
) -> tuple[np.ndarray, np.ndarray]:
    """Square (label 0) vs ``other`` (label 1), rotated within +-``rotate`` radians.

    ``shift``: the figure's centre moves up to this many cells from the retina's centre in each
    direction (clipped so the figure stays on the retina); ``None``: anywhere it fits.
    """
    if shift is not None and not (isinstance(shift, (int, float)) and shift >= 0):
        raise ValueError(f"shift must be a non-negative number of cells or None; got {shift!r}")
    y = _balanced_labels(n, 2, rng)
    X = np.empty((n, _ROWS, _COLS))
    for i, label in enumerate(y):
        side = rng.uniform(6.0, 9.0)
        reach = side / np.sqrt(2) + 0.5  # a rotated square's half-diagonal
        lo_x, hi_x, lo_y, hi_y = reach, _COLS - reach, reach, _ROWS - reach
        if shift is not None:
            lo_x, hi_x = max(lo_x, _COLS / 2 - shift), min(hi_x, _COLS / 2 + shift)
            lo_y, hi_y = max(lo_y, _ROWS / 2 - shift), min(hi_y, _ROWS / 2 + shift)
        cx, cy = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
        theta = rng.uniform(-rotate, rotate)
        if label == 0:
            X[i] = _square(cx, cy, side, theta)
        elif other == "circle":
            X[i] = _disc(cx, cy, side / np.sqrt(np.pi))  # same area as the square
        else:
            X[i] = _square(cx, cy, side, theta + np.pi / 4)
    return X, y


def _letters(
    n: int,
    rng: np.random.Generator,
    letters: str = string.ascii_uppercase,
    typefaces: tuple[str, ...] = ("sans", "serif"),
    shift: float = 3.0,
    height: tuple[float, float] = (11.0, 13.0),
    **_: object,
) -> tuple[np.ndarray, np.ndarray]:
    for face in typefaces:
        if face not in TYPEFACES:
            raise ValueError(f"unknown typeface {face!r}; allowed: {', '.join(TYPEFACES)}")
    y = _balanced_labels(n, len(letters), rng)
    faces = rng.integers(0, len(typefaces), size=n)
    X = np.empty((n, _ROWS, _COLS))
    for i, label in enumerate(y):
        h = rng.uniform(*height)
        cx = _COLS / 2 + rng.uniform(-shift, shift)
        cy = _ROWS / 2 + rng.uniform(-shift, shift)
        X[i] = _letter(letters[label], typefaces[faces[i]], cx, cy, h)
    return X, y


def _xor(
    n: int, rng: np.random.Generator, noise: float = 0.1, **_: object
) -> tuple[np.ndarray, np.ndarray]:
    """Left half lit or dark, right half lit or dark; label = left XOR right."""
    bits = rng.integers(0, 2, size=(n, 2))
    if n >= 4:  # every one of the four points appears
        bits[:4] = [[0, 0], [0, 1], [1, 0], [1, 1]]
        bits = bits[rng.permutation(n)]
    y = (bits[:, 0] ^ bits[:, 1]).astype(np.int64)
    level = np.where(bits == 1, 1.0, 0.0)
    if noise > 0:
        level = np.where(bits == 1, 1.0 - rng.uniform(0, 2 * noise, size=bits.shape),
                         rng.uniform(0, noise, size=bits.shape))
    X = np.empty((n, _ROWS, _COLS))
    X[:, :, : _COLS // 2] = level[:, 0, None, None]
    X[:, :, _COLS // 2 :] = level[:, 1, None, None]
    if noise > 0:
        X += rng.normal(0.0, noise / 2, size=X.shape)
    return np.clip(X, 0.0, 1.0), y


DIGITS_IMAGES = 1797
"""Images in scikit-learn's digits set (8 x 8, ten classes)."""


def _digits(seed: int, n_train: int | None, n_test: int | None) -> Task:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = to_retina(data.images / 16.0, name="digits")
    labels = data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    n_te = n_test if n_test is not None else len(labels) // 4
    n_tr = n_train if n_train is not None else len(labels) - n_te
    if n_tr + n_te > len(labels):
        raise ValueError(
            f"digits has {len(labels)} images; n_train + n_test = {n_tr + n_te} is too many"
        )
    tr, te = order[:n_tr], order[n_tr : n_tr + n_te]
    return Task(
        "digits", images[tr], labels[tr], images[te], labels[te],
        tuple(str(d) for d in range(10)), seed, TASKS["digits"],
    )


_Generator = Callable[..., tuple[np.ndarray, np.ndarray]]

_GENERATORS: dict[str, tuple[_Generator, tuple[str, ...], int, int]] = {
    "left-right": (_left_right, ("left", "right"), 100, 200),
    "square-circle": (
        lambda n, rng, **kw: _square_other(n, rng, "circle", np.pi / 4, **kw),
        ("square", "circle"),
        1000, 500,
    ),
    "square-diamond": (
        lambda n, rng, **kw: _square_other(n, rng, "diamond", np.radians(8), **kw),
        ("square", "diamond"), 100, 400,
    ),
    "e-f": (
        lambda n, rng, **kw: _letters(n, rng, letters="EF", typefaces=("sans",), **kw),
        ("E", "F"), 100, 400,
    ),
    "letters": (_letters, tuple(string.ascii_uppercase), 26 * 60, 26 * 20),
    "xor": (_xor, ("same", "different"), 200, 200),
}

TASKS: dict[str, str] = {
    "left-right": "a card marked on the left half vs the right half (1958 demonstration)",
    "square-circle": "square vs circle of equal area, position and rotation varied",
    "square-diamond": "square vs diamond (the square turned 45 degrees), position varied",
    "e-f": "capital E vs F, one typeface, shifted up to 3 cells",
    "letters": "capitals A-Z in two typefaces (DejaVu Sans and Serif), shifted up to 3 cells",
    "xor": "left half lit XOR right half lit: not linearly separable on the cells",
    "digits": "scikit-learn's 8x8 handwritten digits (1,797 images) projected onto the retina",
}
"""Task names and one-line descriptions."""


TASK_LIMITS: dict[str, Limit] = {
    "n_train": Limit(1, 10_000_000, "images", integer=True),
    "n_test": Limit(1, 10_000_000, "images", integer=True),
    "seed": SEED,
}
"""Allowed range of :func:`make_task`'s numbers (the commands' ``--n-train``, ``--n-test``)."""
IMAGE_BYTES = 3 * N_CELLS * 8
"""Memory one generated image takes while a task is made: its float64 pixels, twice in the
making, once kept."""


def task_classes(name: str) -> tuple[str, ...]:
    """The class names of task ``name`` (without making its images)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    return tuple(str(d) for d in range(10)) if name == "digits" else _GENERATORS[name][1]


def task_sizes(name: str, n_train: int | None = None,
               n_test: int | None = None) -> tuple[int, int]:
    """The training and test images :func:`make_task` makes (task defaults where ``None``),
    found without making them."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    if name == "digits":
        n_te = n_test if n_test is not None else DIGITS_IMAGES // 4
        n_tr = n_train if n_train is not None else DIGITS_IMAGES - n_te
        if n_tr + n_te > DIGITS_IMAGES:
            raise ValueError(f"digits has {DIGITS_IMAGES} images; n_train + n_test = "
                             f"{n_tr + n_te} is too many")
        return n_tr, n_te
    _, _, default_train, default_test = _GENERATORS[name]
    return (default_train if n_train is None else int(n_train),
            default_test if n_test is None else int(n_test))


def make_task(
    name: str,
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    **options: object,
) -> Task:
    """Generate a task's train and test images, seeded.

    ``options`` go to the task's generator: ``shift=`` (cells the figure may move from the
    centre) for the letter and square tasks, ``typefaces=("sans",)`` for the letter tasks,
    ``noise=`` for ``xor``. Train and test images come from independent streams
    of the same seed, so asking for more training images leaves the test set unchanged.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    check_table(TASK_LIMITS, {"n_train": n_train, "n_test": n_test, "seed": seed})
    n_tr, n_te = task_sizes(name, n_train, n_test)
    check_memory(f"task {name} with {n_tr:,} training and {n_te:,} test images",
                 (n_tr + n_te) * IMAGE_BYTES)
    if name == "digits":
        return _digits(int(seed), n_train, n_test)
    generate, classes, default_train, default_test = _GENERATORS[name]
    if name == "letters" and "letters" in options:
        classes = tuple(str(options["letters"]))
    train_rng, test_rng = (np.random.default_rng([seed, k]) for k in (1, 2))
    n_tr = default_train if n_train is None else int(n_train)
    n_te = default_test if n_test is None else int(n_test)
    X_train, y_train = generate(n_tr, train_rng, **options)
    X_test, y_test = generate(n_te, test_rng, **options)
    return Task(
        name, X_train, y_train.astype(np.int64), X_test, y_test.astype(np.int64),
        classes, int(seed), TASKS[name],
    )
