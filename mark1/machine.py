"""The Mark I Perceptron as a scikit-learn-style classifier, and its machine file.

:class:`MarkI` puts the parts together: retina (:mod:`mark1.retina`) -> plugboard and A-units
(:mod:`mark1.plugboard`) -> potentiometer bank (:mod:`mark1.potentiometers`) -> R-units and
class code (:mod:`mark1.r_units`), trained by the rules of :mod:`mark1.training` while the
motors and clock of :mod:`mark1.motors` keep count of the physical machine's time.

Training runs the machine as it is: the cells lag from stimulus to stimulus, the pots read
with contact noise and drift. The cells' history follows the presentation schedule alone (each
card's dark change, then its dwell); the motors' time after a reading advances the clock and the
pots' drift but not the cells. A trial's contact noise is drawn as one Gaussian per R-unit sum
with the variance of the independent noise of its active pots.

``predict``/``decision_function``/``score`` use the *static* path: the rested retina in steady
state and a noise-free read of the pots at the current machine time -- exactly the arrays
:meth:`MarkI.save` writes (see :func:`static_sums`).

The machine file (``machine.npz``, a plain ``numpy.savez``, no pickles):

================  =================================================================================
array             meaning
================  =================================================================================
format            0-d str ``"mark1-kit/markI"``
format_version    0-d int ``1``
cell_threshold    float64 (400,): S-unit fires iff ``x > cell_threshold`` (+inf dead, -inf always)
plugboard         int8 (n_a, 400): net wiring count of each S-unit into each A-unit
a_threshold       float64 (n_a,): A-unit fires iff ``plugboard @ s >= a_threshold``
weights           float64 (n_r, n_a): A->R weights as read (noise-free)
r_bias            float64 (n_r,): ``r = weights @ a + r_bias``; R-unit on iff ``r > 0``
codebook          int8 (n_classes, n_r) in {-1, +1}: the code of each class
classes           str (n_classes,): class names
task              0-d str: the task trained on ("" when not given)
preset            0-d str: the preset name
seed              0-d int: ``random_state`` (-1 when it was not an integer)
================  =================================================================================

Decision rule: ``sign_out = where(r > 0, 1, -1)``; ``agree_k = codebook[k] . sign_out``; among
the classes with maximal agreement the largest ``codebook[k] . r``; remaining ties the lowest k.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from mark1.fast import ARows, one_blas_thread
from mark1.images import (
    N_CELLS,
    RETINA_SHAPE,
    SCALINGS,
    check_light_range,
    grid_shape,
    lay_out,
    resample,
    to_light,
    to_retina,
)
from mark1.io import atomic_write_bytes
from mark1.limits import Limit, check_table
from mark1.motors import MachineClock, check_clock_room
from mark1.plugboard import Plugboard
from mark1.potentiometers import IDEAL_POTS, PotentiometerBank
from mark1.presets import PARAMETERS, Preset, get_preset
from mark1.r_units import CODES, class_scores, decode, make_codebook, trained_units
from mark1.retina import Retina
from mark1.training import RULES, EpochLog, train_epoch

FORMAT = "mark1-kit/markI"
FORMAT_VERSION = 1

Progress = Callable[[int, int, float], None]
"""``progress(new_trials, new_mistakes, machine_time_s)``, called as training advances."""

_PARAMS = ("preset", "rule", "n_a", "n_r", "max_iter", "shuffle", "code", "raw",
           "random_state", "verbose", "machine", "input_shape", "scaling")

MAX_PRESENTATIONS = 10_000_000
"""Most presentations in one pass over the training set (``sample_weight`` repeats samples)."""

_Init = TypeVar("_Init", bound=Callable[..., None])


def _seed_sequence(random_state: object) -> np.random.SeedSequence:
    if random_state is None:
        return np.random.SeedSequence()
    if isinstance(random_state, (bool, np.bool_)):
        raise TypeError(
            f"random_state must be an int, a numpy Generator or None; got {random_state!r}"
        )
    if isinstance(random_state, (int, np.integer)):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0; got {random_state}")
        return np.random.SeedSequence(int(random_state))
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(int(random_state.integers(0, 2**63)))
    raise TypeError(
        f"random_state must be an int, a numpy Generator or None; got {type(random_state).__name__}"
    )


ESTIMATOR_LIMITS: dict[str, Limit] = {
    "n_a": Limit(1, 65536, "A-units", integer=True),
    "n_r": Limit(1, 64, "R-units", integer=True),
    "max_iter": Limit(1, 1_000_000, "passes", integer=True),
}
"""Allowed range of the estimator's numeric parameters (``mark1 simulate`` shows the same)."""


def _whole(name: str, value: object, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a whole number; got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value}")
    return int(value)


def run_memory_bytes(n_images: int, n_a: int, n_r: int) -> int:
    """Upper estimate of the memory a machine of ``n_a`` A-units and ``n_r`` R-units needs
    to train and score on ``n_images`` images, in bytes: per image its light, cell and S-unit
    arrays and an A-unit row; per A-unit its wiring and a pot per R-unit with its state
    (``tests/test_limits.py`` measures the peak against it)."""
    return int(n_images) * (16_384 + 8 * (int(n_a) + 1)) + (int(n_a) + 1) * (
        8_192 + 128 * int(n_r))


def _machine_parameters(machine: object) -> dict[str, Any]:
    """The ``machine`` parameter as a dict (names are checked by ``Preset.with_overrides``)."""
    if machine is None:
        return {}
    if not isinstance(machine, Mapping) or not all(isinstance(k, str) for k in machine):
        raise TypeError(
            "machine must be a dict of machine parameters by name, e.g. "
            f"machine={{'read_noise': 0.01}} (see mark1.presets.PARAMETERS); got {machine!r}"
        )
    return dict(machine)


def _input_shape(value: object) -> tuple[int, int] | None:
    """The ``input_shape`` parameter checked: None or (rows, columns)."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list, np.ndarray)) or np.shape(value) != (2,):
        raise TypeError(f"input_shape must be None or (rows, columns); got {value!r}")
    rows, columns = value
    return _whole("input_shape rows", rows, 1), _whole("input_shape columns", columns, 1)


def _deprecated_machine_keywords(named: dict[str, Any], spelling: str, instead: str) -> None:
    warnings.warn(
        f"{spelling} with machine parameters by name ({', '.join(named)}) is deprecated and will "
        f"be removed: use {instead}", DeprecationWarning, stacklevel=3,
    )


def _machine_keywords(init: _Init) -> _Init:
    """Let ``MarkI(gamma=0.6)`` (machine parameters by name, as before ``machine=``) still work,
    with a DeprecationWarning; any other unknown keyword is refused by name. The signature seen
    by ``inspect`` (and scikit-learn) is the wrapped ``__init__``'s."""

    @functools.wraps(init)
    def init_taking_machine_keywords(self: Any, *args: Any, **kwargs: Any) -> None:
        named = {k: kwargs.pop(k) for k in list(kwargs) if k not in _PARAMS}
        if named:
            unknown = [k for k in named if k not in PARAMETERS]
            if unknown:
                raise TypeError(
                    f"MarkI got an unknown parameter {unknown[0]!r}; allowed: "
                    f"{', '.join(_PARAMS)}, and machine parameters inside machine={{...}} "
                    "(mark1.presets.PARAMETERS)"
                )
            _deprecated_machine_keywords(named, "MarkI(...)", f"MarkI(machine={named!r})")
            kwargs["machine"] = {**_machine_parameters(kwargs.get("machine")), **named}
        init(self, *args, **kwargs)

    return cast(_Init, init_taking_machine_keywords)


def _readable(X: object, name: str = "X") -> int:
    """Refuse, by name, inputs that cannot be light levels before scikit-learn converts them
    (sparse, complex, text, objects that are not numbers, ragged, 1-D); return ``X``'s ndim."""
    from scipy import sparse

    if sparse.issparse(X):
        raise TypeError(
            f"{name} is a sparse {type(X).__name__}: sparse input is not supported (every cell "
            f"of the retina gets a light level); pass a dense array ({name}.toarray())"
        )
    try:
        arr = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of numbers of one shape; could not read it as "
                         f"one ({exc})") from exc
    if np.iscomplexobj(arr):
        raise ValueError(f"Complex data not supported: {name} has dtype {arr.dtype}; light "
                         "levels are real numbers")
    if arr.dtype.kind in "USVMm":
        raise TypeError(f"{name} must hold numbers; got dtype {arr.dtype}")
    if arr.dtype == object:
        try:
            arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            found = next(((i, v) for i, v in np.ndenumerate(arr) if not _is_number(v)), None)
            where = "" if found is None else (
                f" {name}[{', '.join(str(i) for i in found[0])}] is {found[1]!r:.60}")
            raise type(exc)(f"{name} must hold numbers;{where} ({exc})") from exc
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} has shape {arr.shape}: expected 2-D (n_samples, n_features) or images "
            f"(n, h, w). Reshape your data: {name}.reshape(-1, 1) if it is one feature, "
            f"{name}.reshape(1, -1) if it is one sample"
        )
    return int(arr.ndim)


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _presentations(sample_weight: object, n: int) -> np.ndarray | None:
    """The sample shown at each presentation of a pass: sample ``i`` ``sample_weight[i]``
    times; None when every sample is shown once (no weights, or all weights 1)."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must hold numbers; got dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight has shape {w.shape}; expected ({n},): one weight per "
                         "sample")
    bad = ~np.isfinite(w) | (w < 0) | (w != np.floor(w))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"sample_weight[{i}] is {w[i]:g}: a weight is how many times a sample is presented "
            "in each pass, a whole number >= 0"
        )
    total = float(w.sum())
    if total == 0:
        raise ValueError("sample_weight is zero for every sample: nothing to present")
    if total > MAX_PRESENTATIONS:
        raise ValueError(f"sample_weight asks for {total:,.0f} presentations in each pass; at "
                         f"most {MAX_PRESENTATIONS:,}")
    if (w == 1).all():
        return None
    return np.repeat(np.arange(n), w.astype(np.int64))


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # arrays and the like
        return False


def _not_fitted(name: str) -> Exception:
    try:
        from sklearn.exceptions import NotFittedError
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        NotFittedError = AttributeError  # noqa: N806
    return NotFittedError(
        f"This MarkI is not trained yet: call fit or partial_fit before {name}"
    )


class MarkI:
    """The Mark I Perceptron: a classifier with scikit-learn's interface.

    Parameters
    ----------
    preset : str or Preset
        The machine (``"ideal"``, ``"cds-1960"``, ``"cds-worn"``, see :mod:`mark1.presets`).
    rule : str
        ``"error-correction"`` (Rosenblatt's), ``"forced-response"`` or ``"ideal"`` (float).
    n_a : int
        Association units (512 on the Mark I). Ignored when ``raw``.
    n_r : int
        Response units (8 on the Mark I).
    max_iter : int
        Most passes over the training set in ``fit`` (it stops early after an error-free one).
    shuffle : bool
        Present the training stimuli in a new random order each pass.
    code : str
        Class code over the R-units: ``"auto"``, ``"dichotomy"``, ``"one-vs-rest"``, ``"code"``.
    raw : bool
        Wire the S-units straight to the R-units (no A-layer): the single-layer perceptron.
    random_state : int, numpy Generator or None
        Seeds the plugboard, the parts' spreads, the noise and the presentation order.
    verbose : bool
        Show a progress bar (trials, mistakes, machine time) on stderr while training.
    machine : dict or None
        Machine parameters of the preset to change, by name (``machine={"gamma": 0.6,
        "read_noise": 0.01}``; names in :data:`mark1.presets.PARAMETERS`). One of them alone:
        ``set_params(machine__read_noise=0.01)``, and ``"machine__read_noise"`` in a grid
        search. (``MarkI(read_noise=0.01)`` still works, deprecated.)
    input_shape : (int, int) or None
        The picture ``n_features`` make, as (rows, columns): a (n, rows * columns) ``X`` is
        that picture row by row. None: 3-D ``X`` (n, h, w) is h x w pictures, and 2-D ``X``
        with k columns is laid out row by row on the grid of :func:`mark1.images.grid_shape`
        (``ceil(sqrt(k))`` columns; 400 -> 20 x 20, 64 -> 8 x 8, 10 -> 3 x 4 with 2 dark
        cells). The picture is projected onto the 20 x 20 retina by area.
    scaling : str
        How values become light levels in [0, 1] (:data:`mark1.images.SCALINGS`): ``"none"``
        (they are light levels; others refused), ``"clip"`` (to [0, 1]: after a
        MinMaxScaler), ``"logistic"`` (``1 / (1 + exp(-x))``: after a StandardScaler or PCA).

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
        The class labels.
    n_features_in_ : int
        Features per sample seen by ``fit`` (h * w for images).
    feature_names_in_ : ndarray of str
        Column names, when ``fit`` was given a DataFrame with string column names.
    input_shape_ : (int, int)
        The picture the features were laid out as before the projection onto the retina.
    coef_, intercept_ : ndarray (n_r, n_a), (n_r,)
        The A->R weights as read now (noise-free), the R-units' bias.
    n_iter_ : int
        Passes made over the training set.
    mistakes_per_epoch_ : list of int
        Mistakes in each pass.

    Notes
    -----
    There is no ``predict_proba``: a perceptron's R-units are on or off, and their sums are
    not probabilities. ``decision_function`` gives the sums' class scores.

    ``sample_weight`` in ``fit`` and ``partial_fit`` is a number of presentations: sample
    ``i`` is shown ``sample_weight[i]`` times in each pass, each time in its own place of the
    order (0 leaves it out). Weights must be whole numbers >= 0: a perceptron learns from
    trials, and half a trial is not one. Fitting with integer weights is fitting on the
    samples repeated; the order of the samples given still matters, as for any on-line rule.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> model = make_pipeline(StandardScaler(), MarkI(scaling="logistic", random_state=0))
    """

    _estimator_type = "classifier"
    input_shape_: tuple[int, int]

    @_machine_keywords
    def __init__(
        self,
        preset: str | Preset = "cds-1960",
        rule: str = "error-correction",
        n_a: int = 512,
        n_r: int = 8,
        max_iter: int = 20,
        shuffle: bool = True,
        code: str = "auto",
        raw: bool = False,
        random_state: int | np.random.Generator | None = None,
        verbose: bool = False,
        *,
        machine: Mapping[str, Any] | None = None,
        input_shape: tuple[int, int] | None = None,
        scaling: str = "none",
    ) -> None:
        self.preset = preset
        self.rule = rule
        self.n_a = n_a
        self.n_r = n_r
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.code = code
        self.raw = raw
        self.random_state = random_state
        self.verbose = verbose
        self.machine = machine
        self.input_shape = input_shape
        self.scaling = scaling

    # ------------------------------------------------------------------ parameters
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The estimator's parameters; with ``deep``, also each machine parameter set in
        ``machine`` as ``machine__NAME``."""
        params = {name: getattr(self, name) for name in _PARAMS}
        if deep and isinstance(self.machine, Mapping):
            params.update({f"machine__{k}": v for k, v in self.machine.items()})
        return params

    def set_params(self, **params: Any) -> MarkI:
        """Set parameters: the estimator's by name, one machine parameter as
        ``machine__NAME`` (the other entries of ``machine`` are kept)."""
        changes: dict[str, Any] = {}
        named: dict[str, Any] = {}
        for key, value in params.items():
            if key in _PARAMS:
                setattr(self, key, value)
            elif key.startswith("machine__"):
                changes[key.removeprefix("machine__")] = value
            elif key in PARAMETERS:
                named[key] = value
            else:
                raise ValueError(
                    f"invalid parameter {key!r} for MarkI; allowed: {', '.join(_PARAMS)}, or "
                    "machine__NAME for a machine parameter (mark1.presets.PARAMETERS)"
                )
        if named:
            _deprecated_machine_keywords(
                named, "set_params(...)",
                f"set_params({', '.join(f'machine__{k}={v!r}' for k, v in named.items())})")
            changes.update(named)
        if changes:
            unknown = [k for k in changes if k not in PARAMETERS]
            if unknown:
                raise ValueError(f"unknown machine parameter {unknown[0]!r}; allowed: "
                                 f"{', '.join(sorted(PARAMETERS))}")
            self.machine = {**_machine_parameters(self.machine), **changes}
        return self

    def __repr__(self) -> str:
        defaults = MarkI().get_params(deep=False)
        shown = [f"{k}={v!r}" for k, v in self.get_params(deep=False).items()
                 if defaults[k] is not v and not _same(defaults[k], v)]
        return f"MarkI({', '.join(shown)})"

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(multi_class=True, poor_score=True),
            input_tags=InputTags(two_d_array=True, three_d_array=True,
                                 positive_only=self.scaling == "none"),
            non_deterministic=self.random_state is None,
        )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "classes_")

    # ------------------------------------------------------------------ building
    def machine_preset(self) -> Preset:
        """The preset with this estimator's machine parameters (``machine``) applied."""
        return get_preset(self.preset).with_overrides(**_machine_parameters(self.machine))

    def check_params(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first bad parameter (as ``fit``
        would, before any work)."""
        if self.rule not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}; allowed: {', '.join(RULES)}")
        if self.code not in CODES:
            raise ValueError(f"unknown code {self.code!r}; allowed: {', '.join(CODES)}")
        check_table(ESTIMATOR_LIMITS, {k: getattr(self, k) for k in ESTIMATOR_LIMITS})
        if not isinstance(self.scaling, str) or self.scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {self.scaling!r}; allowed: {', '.join(SCALINGS)}")
        _input_shape(self.input_shape)
        self.machine_preset()

    def _build(self, classes: np.ndarray) -> None:
        """A fresh machine for ``classes``: wired, with new parts, at machine time zero."""
        preset = self.machine_preset()
        codebook = make_codebook(len(classes), int(self.n_r), self.code)
        seeds = _seed_sequence(self.random_state).spawn(6)
        rng_wiring, rng_cells, rng_pots, self._rng_steps, self._rng_noise, self._rng_order = (
            np.random.default_rng(s) for s in seeds
        )
        self.preset_ = preset
        self.classes_ = classes
        self.codebook_ = codebook
        self.units_ = trained_units(codebook)
        self.retina_ = Retina(preset.cells, rng_cells)
        self.plugboard_ = (
            Plugboard.identity(N_CELLS) if self.raw
            else Plugboard.wire(preset.plugboard, int(self.n_a), N_CELLS, rng_wiring)
        )
        n_p = self.plugboard_.n_a + int(preset.r_units.bias_unit)
        pots = IDEAL_POTS if self.rule == "ideal" else preset.pots
        self.pots_ = PotentiometerBank(pots, (int(self.n_r), n_p), rng_pots)
        self.clock_ = MachineClock(preset.clock, preset.motors)
        self.n_iter_ = 0
        self.mistakes_per_epoch_: list[int] = []
        self.epoch_logs_: list[EpochLog] = []
        self.history_: dict[str, list[float]] = {
            "mistakes": [], "trials": [], "machine_time_s": [], "motor_steps": [],
        }

    # ------------------------------------------------------------------ input
    def _light(self, X: object, *, reset: bool) -> np.ndarray:
        """``X`` as the light on the retina, (n, 400), checked against what the machine was
        fitted on (``reset``: this is the fit, record the features and their picture)."""
        return self._project(self._values(X, reset=reset))

    def _values(self, X: object, *, reset: bool) -> np.ndarray:
        """``X`` checked as finite features, float64 (n_samples, n_features); with ``reset``,
        record ``n_features_in_`` (and ``feature_names_in_``) and ``input_shape_``."""
        from sklearn.utils.validation import check_array, validate_data

        if _readable(X) == 3:
            images = check_array(X, allow_nd=True, dtype=np.float64, ensure_all_finite=False,
                                 estimator=self)
            n, h, w = images.shape
            shape = self._image_shape(h, w, reset=reset)
            values = validate_data(self, images.reshape(n, h * w), reset=reset,
                                   dtype=np.float64, ensure_all_finite=False)
        else:
            values = validate_data(self, X, reset=reset, dtype=np.float64,
                                   ensure_all_finite=False)
            shape = self._layout(values.shape[1]) if reset else self.input_shape_
        bad = ~np.isfinite(values)
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            what = "NaN" if np.isnan(values[i, j]) else "infinity"
            raise ValueError(f"X contains {what} (first in sample {i}, feature {j}); light "
                             "levels are finite numbers")
        if reset:
            self.input_shape_ = shape
        return np.asarray(values)

    def _image_shape(self, h: int, w: int, *, reset: bool) -> tuple[int, int]:
        """``(h, w)``, the size of the images ``X`` holds, checked against ``input_shape``
        (``reset``) or what the machine was fitted on."""
        wanted = _input_shape(self.input_shape) if reset else self.input_shape_
        if wanted is not None and (h, w) != wanted:
            fitted = "input_shape is" if reset else "this MarkI was fitted on"
            raise ValueError(
                f"X holds {h}x{w} images, but {fitted} {wanted[0]}x{wanted[1]} "
                f"({wanted[0] * wanted[1]} features)"
            )
        return h, w

    def _project(self, values: np.ndarray) -> np.ndarray:
        """Checked features as light (``scaling``), laid out as ``input_shape_`` and projected
        onto the retina: float64 (n, 400)."""
        if self.scaling == "none":
            check_light_range(values, "X", advice="; for features of another range set "
                              "scaling='clip' or 'logistic'")
        light = to_light(values, self.scaling)
        return resample(lay_out(light, self.input_shape_), RETINA_SHAPE).reshape(-1, N_CELLS)

    def _layout(self, n_features: int) -> tuple[int, int]:
        """The picture ``n_features`` make: ``input_shape``, or the grid rule."""
        shape = _input_shape(self.input_shape)
        if shape is None:
            return grid_shape(n_features)
        if shape[0] * shape[1] != n_features:
            raise ValueError(
                f"X has {n_features} features, but input_shape={shape} lays out "
                f"{shape[0] * shape[1]}"
            )
        return shape

    def _targets(self, y: object, n: int) -> np.ndarray:
        """Class labels, one per sample."""
        from sklearn.utils import assert_all_finite, column_or_1d
        from sklearn.utils.multiclass import check_classification_targets

        if y is None:
            raise ValueError("MarkI requires y to be passed, but the target y is None: fit "
                             "needs one class label per sample")
        labels = column_or_1d(y, warn=True)
        if len(labels) != n:
            raise ValueError(f"X has {n} samples but y has {len(labels)} labels")
        if labels.dtype.kind in "fc":
            assert_all_finite(labels, input_name="y")
        check_classification_targets(labels)
        return labels

    def to_retina(self, X: object) -> np.ndarray:
        """The light each photocell receives for ``X`` as ``predict`` sees it: features
        scaled (``scaling``), laid out (``input_shape_``) and projected; float64 (n, 20, 20).
        Feed these to the machine file's decision rule (``machine.npz`` starts at the cells)."""
        self._check_fitted("to_retina")
        return self._light(X, reset=False).reshape(-1, *RETINA_SHAPE)

    # ------------------------------------------------------------------ training
    def fit(self, X: object, y: object, sample_weight: object = None, *,
            progress: Progress | None = None) -> MarkI:
        """Train a fresh machine for up to ``max_iter`` passes (stops after an error-free one).

        ``sample_weight``: how many times each sample is presented in a pass (whole numbers).
        ``progress(new_trials, new_mistakes, machine_time_s)`` is called as training advances.
        """
        self.check_params()
        values = self._values(X, reset=True)
        y = self._targets(y, len(values))
        return self._fit_values(values, y, _presentations(sample_weight, len(values)), progress)

    def _fit_images(self, images: np.ndarray, y: np.ndarray) -> MarkI:
        """``fit(images, y)`` for images this kit made (float64 ``(n, h, w)``, finite; ``y``
        one label each): the same machine, without scikit-learn's checks of the input. A
        sweep's worker process trains on ``make_task``'s images and would import
        scikit-learn (~0.8 s of every sweep's start) only to check arrays it made itself;
        tests/test_sweep.py checks its rows against ``fit`` and ``score``."""
        self.check_params()
        n, h, w = images.shape
        self.input_shape_ = self._image_shape(h, w, reset=True)
        self.n_features_in_ = h * w  # as validate_data records it (no feature names)
        return self._fit_values(images.reshape(n, h * w), np.asarray(y), None, None)

    def _fit_values(self, values: np.ndarray, y: np.ndarray, shown: np.ndarray | None,
                    progress: Progress | None) -> MarkI:
        """``fit`` after its checks: ``values`` float64 (n, n_features), laid out as
        ``input_shape_``; ``y`` a label each; ``shown`` the presentations of a pass."""
        x = self._project(values)
        classes = np.unique(y if shown is None else y[shown])
        if len(classes) < 2:
            raise ValueError(f"y has 1 class ({classes.tolist()[0]!r}); a Mark I needs samples "
                             "of at least 2 classes to learn")
        self._build(classes)
        index = np.searchsorted(classes, y)
        with one_blas_thread():
            static = None
            if self.preset_.cells.settles_instantly:  # the same A-unit rows every pass
                static = self._features(self.retina_.respond_static(x))
            for _ in range(int(self.max_iter)):
                if self._epoch(x, index, progress, static, shown) == 0:
                    break
        return self

    def partial_fit(self, X: object, y: object, classes: object = None,
                    sample_weight: object = None, *,
                    progress: Progress | None = None) -> MarkI:
        """One pass over ``X`` with the machine as it is (``classes`` needed on the first call).

        ``sample_weight``: how many times each sample is presented (whole numbers).
        """
        first = not hasattr(self, "classes_")
        if first:
            self.check_params()
        values = self._values(X, reset=first)
        y = self._targets(y, len(values))
        shown = _presentations(sample_weight, len(values))
        x = self._project(values)
        if first:
            if classes is None:
                raise ValueError("classes must be given on the first call to partial_fit")
            self._build(np.unique(np.asarray(classes)))
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)),
                                                        self.classes_):
            raise ValueError(
                f"classes {list(np.unique(np.asarray(classes)))} differ from the machine's "
                f"{list(self.classes_)}"
            )
        presented = y if shown is None else y[shown]
        unknown = ~np.isin(presented, self.classes_)
        if unknown.any():
            raise ValueError(
                f"label {presented[unknown][0]!r} is not among the classes {list(self.classes_)}"
            )
        with one_blas_thread():
            self._epoch(x, np.searchsorted(self.classes_, y), progress, presented=shown)
        return self

    def _features(self, s: np.ndarray) -> ARows:
        """The A-unit rows (bias line included) of S-unit outputs ``s``."""
        a = self.plugboard_.respond(s)
        if self.preset_.r_units.bias_unit:
            a = np.concatenate([a, np.ones((len(a), 1), dtype=bool)], axis=1)
        return ARows(a)

    def _epoch(self, x: np.ndarray, index: np.ndarray, progress: Progress | None,
               static: ARows | None = None, presented: np.ndarray | None = None) -> int:
        """Present every image once (in a fresh order when shuffling); return the mistakes.

        ``static``: the A-unit rows of ``x`` when the cells settle instantly (then the
        retina's history does not matter and the rows are reused pass after pass).
        ``presented``: the image of each presentation when not every image is shown once
        (``sample_weight``); the pass shows them in a fresh order as it would the images.
        """
        n = len(x) if presented is None else len(presented)
        clock = self.preset_.clock
        n_pots = self.pots_.shape[0] * self.pots_.shape[1]
        check_clock_room(clock, self.preset_.motors, n_pots, n, self.clock_.t_us)
        order = self._rng_order.permutation(n) if self.shuffle else np.arange(n)
        if presented is not None:
            order = presented[order]
        rows: np.ndarray | None = None
        if static is not None:
            A, rows = static, order
        else:
            A = self._features(self.retina_.present(x, clock.dwell_s, clock.change_s, order))
        targets = self.codebook_[index[order]][:, self.units_]
        noise = None
        if self.pots_.spec.read_noise > 0:
            noise = self._rng_noise.standard_normal(targets.shape)
        bar = None
        callback = None
        if progress is not None or self.verbose:
            if self.verbose:
                from tqdm import tqdm

                bar = tqdm(total=n, desc=f"epoch {self.n_iter_ + 1}", unit="trial",
                           leave=False)

            def callback(new_trials: int, new_mistakes: int) -> None:
                if progress is not None:
                    progress(new_trials, new_mistakes, self.clock_.t_s)
                if bar is not None:
                    bar.update(new_trials)
                    bar.set_postfix(machine_time=f"{self.clock_.t_s:.0f}s")

        log = train_epoch(
            A, targets, self.pots_, self.units_, self.clock_, self._rng_steps, rule=self.rule,
            noise=noise, r_theta=self.preset_.r_units.r_theta, order=rows, progress=callback,
        )
        if bar is not None:
            bar.close()
        self.n_iter_ += 1
        self.mistakes_per_epoch_.append(log.mistakes)
        self.epoch_logs_.append(log)
        self.history_["mistakes"].append(log.mistakes)
        self.history_["trials"].append(n)
        self.history_["machine_time_s"].append(self.clock_.t_s)
        self.history_["motor_steps"].append(self.clock_.motor_steps)
        return log.mistakes

    # ------------------------------------------------------------------ reading out
    def _check_fitted(self, what: str) -> None:
        if not hasattr(self, "classes_"):
            raise _not_fitted(what)

    @property
    def coef_(self) -> np.ndarray:
        """A->R weights as read now (noise-free), float64 (n_r, n_a)."""
        self._check_fitted("coef_")
        return self.pots_.read(self.clock_.t_s)[:, : self.plugboard_.n_a]

    @property
    def intercept_(self) -> np.ndarray:
        """R-unit bias ``r_bias`` (bias pot minus the fixed threshold), float64 (n_r,)."""
        self._check_fitted("intercept_")
        bias = -self.preset_.r_units.r_theta * np.ones(int(self.n_r))
        if self.preset_.r_units.bias_unit:
            bias = bias + self.pots_.read(self.clock_.t_s)[:, -1]
        return bias

    @property
    def machine_time_s(self) -> float:
        """Machine time the physical machine has run so far, seconds."""
        self._check_fitted("machine_time_s")
        return self.clock_.t_s

    @property
    def motor_steps(self) -> int:
        """Motor steps taken so far, summed over all motors."""
        self._check_fitted("motor_steps")
        return self.clock_.motor_steps

    def machine_arrays(self, task: str = "") -> dict[str, np.ndarray]:
        """The machine file's arrays (see the module docstring)."""
        self._check_fitted("machine_arrays")
        preset = self.preset if isinstance(self.preset, str) else self.preset.name
        seed = int(self.random_state) if isinstance(self.random_state, (int, np.integer)) and (
            not isinstance(self.random_state, bool)) else -1
        return {
            "format": np.array(FORMAT),
            "format_version": np.array(FORMAT_VERSION),
            "cell_threshold": self.retina_.cell_threshold().astype(np.float64),
            "plugboard": self.plugboard_.wiring.astype(np.int8),
            "a_threshold": self.plugboard_.threshold.astype(np.float64),
            "weights": self.coef_.astype(np.float64),
            "r_bias": self.intercept_.astype(np.float64),
            "codebook": self.codebook_.astype(np.int8),
            "classes": np.array([str(c) for c in self.classes_]),
            "task": np.array(str(task)),
            "preset": np.array(str(preset)),
            "seed": np.array(seed),
        }

    def _sums(self, X: object) -> np.ndarray:
        self._check_fitted("predict")
        return retina_sums(self.machine_arrays(), self._light(X, reset=False))

    def _score_images(self, images: np.ndarray, y: np.ndarray) -> float:
        """``score(images, y)`` for images this kit made, as :meth:`_fit_images` trains."""
        self._check_fitted("score")
        n, h, w = images.shape
        self._image_shape(h, w, reset=False)
        light = self._project(images.reshape(n, h * w))
        pred = self.classes_[decode(self.codebook_, retina_sums(self.machine_arrays(), light))]
        return float((pred == np.asarray(y)).mean())

    def decision_function(self, X: object) -> np.ndarray:
        """Per-class scores (n, n_classes) whose argmax is ``predict``; (n,) for two classes.

        Two classes: the score is positive for ``classes_[1]``; with the one-unit dichotomy
        code it is that R-unit's sum itself.
        """
        r = self._sums(X)
        if len(self.classes_) == 2:
            if len(self.units_) == 1:
                unit = int(self.units_[0])
                return r[:, unit] * float(self.codebook_[1, unit])
            scores = class_scores(self.codebook_, r)
            return scores[:, 1] - scores[:, 0]
        return class_scores(self.codebook_, r)

    def predict(self, X: object) -> np.ndarray:
        """Class of each image by the static path (rested cells, noise-free read)."""
        r = self._sums(X)
        return self.classes_[decode(self.codebook_, r)]

    def score(self, X: object, y: object, sample_weight: object = None) -> float:
        """Accuracy of :meth:`predict` on ``(X, y)``; weighted by ``sample_weight`` (any
        numbers >= 0, not all zero) when given."""
        pred = self.predict(X)
        y = self._targets(y, len(pred))
        right = (pred == y).astype(np.float64)
        if sample_weight is None:
            return float(right.mean())
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != right.shape or not np.isfinite(w).all() or (w < 0).any() or not w.sum():
            raise ValueError(f"sample_weight must be {len(right)} finite numbers >= 0, not all "
                             f"zero; got shape {w.shape}")
        return float((right * w).sum() / w.sum())

    def present(self, X: object) -> np.ndarray:
        """The machine's live answers: the cells lag, the pots read with noise; time runs.

        Nothing is learned. The clock advances by one presentation per image.
        """
        self._check_fitted("present")
        x = self._light(X, reset=False)
        clock = self.preset_.clock
        A = self._features(self.retina_.present(x, clock.dwell_s, clock.change_s)).A
        rng = self._rng_noise
        r = np.empty((len(x), int(self.n_r)))
        for i in range(len(x)):
            t = self.clock_.present() * 1e-6
            w = self.pots_.read_noisy(t, rng)
            r[i] = A[i] @ w.T - self.preset_.r_units.r_theta
        return self.classes_[decode(self.codebook_, r)]

    def save(self, path: str | os.PathLike[str], task: str = "") -> Path:
        """Write the machine file (``machine.npz``) atomically; returns its path.

        The file holds the machine from the photocells on. A machine fitted on features that
        are not 20 x 20 light images (another ``input_shape_``, a ``scaling``) needs its
        inputs as :meth:`to_retina` gives them wherever the file is used."""
        return save_machine(path, self.machine_arrays(task))


# ---------------------------------------------------------------------- the machine file


def static_sums(machine: dict[str, Any], X: object) -> np.ndarray:
    """R-unit sums ``r`` (n, n_r) of the static path, from the machine file's arrays, for
    light images ``X`` (:func:`mark1.images.to_retina` takes them)."""
    return retina_sums(machine, to_retina(X).reshape(-1, N_CELLS))


def retina_sums(machine: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """R-unit sums ``r`` (n, n_r) of the static path for the light ``x`` (n, 400) on the
    retina."""
    s = x > machine["cell_threshold"]
    a = (s.astype(np.float32) @ machine["plugboard"].T.astype(np.float32)) >= machine[
        "a_threshold"]
    return a.astype(np.float64) @ machine["weights"].T + machine["r_bias"]


def static_predict(machine: dict[str, Any], X: object) -> np.ndarray:
    """Class indices by the file's decision rule (the reference for every other engine)."""
    return decode(machine["codebook"], static_sums(machine, X))


_SPEC: dict[str, tuple[str, int]] = {
    "format": ("U", 0), "format_version": ("i", 0), "cell_threshold": ("f", 1),
    "plugboard": ("i", 2), "a_threshold": ("f", 1), "weights": ("f", 2), "r_bias": ("f", 1),
    "codebook": ("i", 2), "classes": ("U", 1), "task": ("U", 0), "preset": ("U", 0),
    "seed": ("i", 0),
}
_DTYPES = {"cell_threshold": np.float64, "plugboard": np.int8, "a_threshold": np.float64,
           "weights": np.float64, "r_bias": np.float64, "codebook": np.int8}


def save_machine(path: str | os.PathLike[str], machine: dict[str, Any]) -> Path:
    """Write a machine file from its arrays by name (as :meth:`MarkI.machine_arrays` or
    :func:`load_machine` give them), atomically; returns its path.

    The one writer of the format: every entry is stored with the contract's dtype, in the
    contract's order (``numpy.savez``, no pickles).
    """
    missing = [k for k in _SPEC if k not in machine]
    if missing:
        raise ValueError(f"a machine file needs {', '.join(missing)}")
    arrays = {key: np.array(machine[key], dtype=_DTYPES.get(key)) for key in _SPEC}
    arrays["classes"] = np.array([str(c) for c in machine["classes"]])
    for key in ("format", "task", "preset"):
        arrays[key] = np.array(str(machine[key]))
    for key in ("format_version", "seed"):
        arrays[key] = np.array(int(machine[key]))
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # (numpy's stub misreads the keywords)
    return atomic_write_bytes(path, buf.getvalue())


def load_machine(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a machine file; return its arrays by name.

    Array entries stay numpy arrays with the contract's dtypes; the 0-d entries come back as
    Python values (``format``, ``task``, ``preset``: str; ``format_version``, ``seed``: int).
    Raises ``ValueError`` naming the first problem found.
    """
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):  # np.load would try pickle next
        raise ValueError(f"{path}: not a readable machine file (not a .npz archive, as "
                         "`mark1 simulate` writes)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable machine file ({exc})") from exc
    missing = [k for k in _SPEC if k not in arrays]
    if missing:
        raise ValueError(f"{path}: machine file lacks {', '.join(missing)}")
    for key, (kind, ndim) in _SPEC.items():
        arr = arrays[key]
        if arr.dtype.kind != kind or arr.ndim != ndim:
            raise ValueError(
                f"{path}: {key} must be a {ndim}-d array of kind {kind!r}; "
                f"got {arr.ndim}-d {arr.dtype}"
            )
    if str(arrays["format"]) != FORMAT:
        raise ValueError(f"{path}: format is {str(arrays['format'])!r}, expected {FORMAT!r}")
    if int(arrays["format_version"]) != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {int(arrays['format_version'])} is not supported "
            f"(this reader knows {FORMAT_VERSION})"
        )
    n_s = arrays["cell_threshold"].shape[0]
    n_a, n_s2 = arrays["plugboard"].shape
    n_r = arrays["weights"].shape[0]
    n_classes = arrays["classes"].shape[0]
    checks = [
        (n_s == N_CELLS, f"cell_threshold has {n_s} cells, expected {N_CELLS}"),
        (n_s2 == N_CELLS, f"plugboard has {n_s2} columns, expected {N_CELLS}"),
        (arrays["plugboard"].dtype == np.int8, "plugboard must be int8"),
        (arrays["codebook"].dtype == np.int8, "codebook must be int8"),
        (arrays["a_threshold"].shape == (n_a,), f"a_threshold must have shape ({n_a},)"),
        (arrays["weights"].shape == (n_r, n_a), f"weights must have shape (n_r, {n_a})"),
        (arrays["r_bias"].shape == (n_r,), f"r_bias must have shape ({n_r},)"),
        (arrays["codebook"].shape == (n_classes, n_r),
         f"codebook must have shape ({n_classes}, {n_r})"),
        (np.isin(arrays["codebook"], (-1, 1)).all(), "codebook entries must be -1 or +1"),
        (n_classes >= 2, "a machine needs at least 2 classes"),
        (not np.isnan(arrays["cell_threshold"]).any(), "cell_threshold contains NaN"),
        (np.isfinite(arrays["a_threshold"]).all(), "a_threshold must be finite"),
        (np.isfinite(arrays["weights"]).all(), "weights must be finite"),
        (np.isfinite(arrays["r_bias"]).all(), "r_bias must be finite"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"{path}: {message}")
    out: dict[str, Any] = dict(arrays)
    for key in ("format", "task", "preset"):
        out[key] = str(arrays[key])
    for key in ("format_version", "seed"):
        out[key] = int(arrays[key])
    return out
