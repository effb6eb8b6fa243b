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

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mark1.fast import ARows, one_blas_thread
from mark1.images import N_CELLS, to_retina
from mark1.io import atomic_write_bytes
from mark1.motors import MachineClock
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
           "random_state", "verbose")


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


def _whole(name: str, value: object, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a whole number; got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value}")
    return int(value)


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
    **overrides
        Any machine parameter of the preset by name (``gamma=0.6``, ``read_noise=0.01``...).
    """

    _estimator_type = "classifier"

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
        **overrides: Any,
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
        for key, value in overrides.items():
            setattr(self, key, value)

    # ------------------------------------------------------------------ parameters
    def _overrides(self) -> dict[str, Any]:
        """Machine parameters given to ``__init__``/``set_params`` (checked by ``fit``)."""
        return {k: v for k, v in vars(self).items()
                if k not in _PARAMS and not k.startswith("_") and not k.endswith("_")}

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The estimator's parameters, machine-parameter overrides included."""
        params = {name: getattr(self, name) for name in _PARAMS}
        params.update(self._overrides())
        return params

    def set_params(self, **params: Any) -> MarkI:
        """Set parameters (estimator parameters or machine parameters by name)."""
        for key, value in params.items():
            if key not in _PARAMS and key not in PARAMETERS:
                raise ValueError(
                    f"invalid parameter {key!r} for MarkI; allowed: {', '.join(_PARAMS)} or a "
                    "machine parameter (mark1.presets.PARAMETERS)"
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = MarkI().get_params()
        shown = [f"{k}={v!r}" for k, v in self.get_params().items()
                 if k not in defaults or defaults[k] is not v and defaults[k] != v]
        return f"MarkI({', '.join(shown)})"

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(multi_class=True, poor_score=True),
            input_tags=InputTags(two_d_array=True, three_d_array=True, positive_only=True),
            non_deterministic=self.random_state is None,
        )

    # ------------------------------------------------------------------ building
    def machine_preset(self) -> Preset:
        """The preset with this estimator's overrides applied."""
        return get_preset(self.preset).with_overrides(**self._overrides())

    def check_params(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first bad parameter (as ``fit``
        would, before any work)."""
        if self.rule not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}; allowed: {', '.join(RULES)}")
        if self.code not in CODES:
            raise ValueError(f"unknown code {self.code!r}; allowed: {', '.join(CODES)}")
        _whole("n_a", self.n_a, 1)
        _whole("n_r", self.n_r, 1)
        _whole("max_iter", self.max_iter, 1)
        self.machine_preset()

    def _build(self, classes: np.ndarray) -> None:
        """A fresh machine for ``classes``: wired, with new parts, at machine time zero."""
        self.check_params()
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
        self.n_features_in_ = N_CELLS
        self.n_iter_ = 0
        self.mistakes_per_epoch_: list[int] = []
        self.epoch_logs_: list[EpochLog] = []
        self.history_: dict[str, list[float]] = {
            "mistakes": [], "trials": [], "machine_time_s": [], "motor_steps": [],
        }

    # ------------------------------------------------------------------ training
    def _labels(self, y: object, n: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (one label per image); got shape {y.shape}")
        if len(y) != n:
            raise ValueError(f"X has {n} images but y has {len(y)} labels")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity")
        return y

    def fit(self, X: object, y: object, *, progress: Progress | None = None) -> MarkI:
        """Train a fresh machine for up to ``max_iter`` passes (stops after an error-free one).

        ``progress(new_trials, new_mistakes, machine_time_s)`` is called as training advances.
        """
        x = to_retina(X).reshape(-1, N_CELLS)
        y = self._labels(y, len(x))
        classes = np.unique(y)
        self._build(classes)
        index = np.searchsorted(classes, y)
        with one_blas_thread():
            static = None
            if self.preset_.cells.settles_instantly:  # the same A-unit rows every pass
                static = self._features(self.retina_.respond_static(x))
            for _ in range(int(self.max_iter)):
                if self._epoch(x, index, progress, static) == 0:
                    break
        return self

    def partial_fit(self, X: object, y: object, classes: object = None, *,
                    progress: Progress | None = None) -> MarkI:
        """One pass over ``X`` with the machine as it is (``classes`` needed on the first call)."""
        x = to_retina(X).reshape(-1, N_CELLS)
        y = self._labels(y, len(x))
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be given on the first call to partial_fit")
            self._build(np.unique(np.asarray(classes)))
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)),
                                                        self.classes_):
            raise ValueError(
                f"classes {list(np.unique(np.asarray(classes)))} differ from the machine's "
                f"{list(self.classes_)}"
            )
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise ValueError(
                f"label {y[unknown][0]!r} is not among the classes {list(self.classes_)}"
            )
        with one_blas_thread():
            self._epoch(x, np.searchsorted(self.classes_, y), progress)
        return self

    def _features(self, s: np.ndarray) -> ARows:
        """The A-unit rows (bias line included) of S-unit outputs ``s``."""
        a = self.plugboard_.respond(s)
        if self.preset_.r_units.bias_unit:
            a = np.concatenate([a, np.ones((len(a), 1), dtype=bool)], axis=1)
        return ARows(a)

    def _epoch(self, x: np.ndarray, index: np.ndarray, progress: Progress | None,
               static: ARows | None = None) -> int:
        """Present every image once (in a fresh order when shuffling); return the mistakes.

        ``static``: the A-unit rows of ``x`` when the cells settle instantly (then the
        retina's history does not matter and the rows are reused pass after pass).
        """
        order = self._rng_order.permutation(len(x)) if self.shuffle else np.arange(len(x))
        clock = self.preset_.clock
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

                bar = tqdm(total=len(x), desc=f"epoch {self.n_iter_ + 1}", unit="trial",
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
        self.history_["trials"].append(len(x))
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
        return static_sums(self.machine_arrays(), X)

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
        """Accuracy of :meth:`predict` on ``(X, y)``."""
        pred = self.predict(X)
        y = self._labels(y, len(pred))
        right = (pred == y).astype(np.float64)
        if sample_weight is None:
            return float(right.mean())
        w = np.asarray(sample_weight, dtype=np.float64)
        return float((right * w).sum() / w.sum())

    def present(self, X: object) -> np.ndarray:
        """The machine's live answers: the cells lag, the pots read with noise; time runs.

        Nothing is learned. The clock advances by one presentation per image.
        """
        self._check_fitted("present")
        x = to_retina(X).reshape(-1, N_CELLS)
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
        """Write the machine file (``machine.npz``) atomically; returns its path."""
        return save_machine(path, self.machine_arrays(task))


# ---------------------------------------------------------------------- the machine file


def static_sums(machine: dict[str, Any], X: object) -> np.ndarray:
    """R-unit sums ``r`` (n, n_r) of the static path, from the machine file's arrays."""
    x = to_retina(X).reshape(-1, N_CELLS)
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
