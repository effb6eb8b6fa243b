"""Light images onto the 20 x 20 retina: reading image files, checking and resampling.

An image is relative illuminance in [0, 1] (0 = dark, 1 = full lamp level). Images of any
size are projected onto the retina by area: each photocell receives the mean light of the
part of the image that falls on it, as a lens imaging the picture onto the cell grid would.

Features that are not pictures (a PCA's components, scaled columns) become one: their light
levels (:data:`SCALINGS`) are laid out row by row on a grid (:func:`grid_shape`, dark where
the grid has more cells than there are features) and projected like any image.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

RETINA_SHAPE: tuple[int, int] = (20, 20)
"""Rows and columns of photocells on the Mark I retina."""

N_CELLS: int = RETINA_SHAPE[0] * RETINA_SHAPE[1]


@lru_cache(maxsize=64)
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix: the share of each input pixel inside each output cell."""
    edges_in = np.linspace(0.0, 1.0, n_in + 1)
    edges_out = np.linspace(0.0, 1.0, n_out + 1)
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    overlap = np.clip(hi - lo, 0.0, None)
    m = overlap / overlap.sum(axis=1, keepdims=True)
    m.setflags(write=False)
    return m


def resample(images: np.ndarray, shape: tuple[int, int] = RETINA_SHAPE) -> np.ndarray:
    """Project images shaped (n, h, w) onto a grid of ``shape`` by area averaging."""
    n, h, w = images.shape
    rows = _area_matrix(h, shape[0])
    cols = _area_matrix(w, shape[1])
    if (h, w) == shape:
        return images.astype(np.float64, copy=True)
    return np.einsum("ih,nhw,jw->nij", rows, images, cols, optimize=True)


def grid_shape(n_features: int) -> tuple[int, int]:
    """The grid ``n_features`` are laid out on: ``w = ceil(sqrt(n))`` columns and
    ``h = ceil(n / w)`` rows (400 -> 20 x 20, 64 -> 8 x 8, 10 -> 3 x 4, 2 -> 1 x 2)."""
    if n_features < 1:
        raise ValueError(f"at least one feature is needed to light the retina; got {n_features}")
    w = math.isqrt(n_features - 1) + 1
    return -(-n_features // w), w


def lay_out(light: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Rows of light levels (n, k) as images (n, h, w): row by row, dark after the k-th cell."""
    n, k = light.shape
    h, w = shape
    if k > h * w:
        raise ValueError(f"{k} features do not fit a {h}x{w} grid")
    if k == h * w:
        return light.reshape(n, h, w)
    images = np.zeros((n, h * w))
    images[:, :k] = light
    return images.reshape(n, h, w)


SCALINGS: dict[str, str] = {
    "none": "the values are light levels already: relative illuminance in [0, 1], others refused",
    "clip": "values below 0 are dark, above 1 full lamp level, in between as they are "
            "(MinMaxScaler's output, whose new data may leave [0, 1])",
    "logistic": "light = 1 / (1 + exp(-x)): 0 is half the lamp level, every real value lights "
                "(StandardScaler's or a PCA's output)",
}
"""How feature values become light levels (``MarkI(scaling=...)``)."""


def to_light(values: np.ndarray, scaling: str, name: str = "X") -> np.ndarray:
    """Finite feature values as light levels in [0, 1] by the rule ``scaling`` of
    :data:`SCALINGS` (``"none"``: checked, returned as they are)."""
    if scaling == "none":
        check_light_range(values, name)
        return values
    if scaling == "clip":
        return np.clip(values, 0.0, 1.0)
    if scaling == "logistic":
        return 0.5 + 0.5 * np.tanh(0.5 * values)  # the logistic function, with no overflow
    raise ValueError(f"unknown scaling {scaling!r}; allowed: {', '.join(SCALINGS)}")


def check_light_range(values: np.ndarray, name: str = "X", advice: str = "") -> None:
    """Refuse values outside [0, 1], naming the range found (``advice`` ends the message)."""
    if not values.size:
        return
    lo, hi = float(values.min()), float(values.max())
    if lo < 0.0 or hi > 1.0:
        hint = " (divide 8-bit images by 255)" if lo >= 0.0 and 1.0 < hi <= 255.0 else ""
        raise ValueError(
            f"{name} values must be relative illuminance in [0, 1]; got range "
            f"[{lo:g}, {hi:g}]{hint}{advice}"
        )


def check_images(X: object, name: str = "X") -> np.ndarray:
    """Validate light images and return them as float64 (n, h, w).

    Accepts (n, 400) flattened retina images, (n, 20, 20), or any (n, h, w). Raises
    ``ValueError``/``TypeError`` naming the problem when the input is not a batch of finite
    relative illuminances in [0, 1].
    """
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of images; could not convert: {exc}") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ):
        raise TypeError(f"{name} must hold numbers; got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 2:
        if arr.shape[1] != N_CELLS:
            raise ValueError(
                f"{name} has shape {arr.shape}: a 2-D input needs {N_CELLS} columns "
                f"(a flattened {RETINA_SHAPE[0]}x{RETINA_SHAPE[1]} image); pass other sizes "
                "as (n, h, w) to resample them"
            )
        arr = arr.reshape(-1, *RETINA_SHAPE)
    elif arr.ndim != 3:
        raise ValueError(
            f"{name} has shape {arr.shape}: expected (n, {N_CELLS}), (n, 20, 20) or (n, h, w)"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: at least one image is needed")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{name} has shape {arr.shape}: images must have at least one pixel")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{name} contains NaN or infinity (first in image {idx})")
    check_light_range(arr, name)
    return arr


def to_retina(X: object, name: str = "X") -> np.ndarray:
    """Validate images and project them onto the retina: float64 array (n, 20, 20)."""
    return resample(check_images(X, name), RETINA_SHAPE)


MAX_IMAGE_PIXELS = 4096 * 4096
"""Most pixels one image file may have; its size is read from the file's header and checked
before anything is decoded (the retina has 400 cells: a larger picture adds nothing)."""
MAX_TOTAL_PIXELS = 2**26
"""Most pixels all the images of one call may have together (512 MiB as float64)."""


def _png_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or ``None`` if ``head`` is not a PNG's."""
    import struct

    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR" or len(head) < 24:
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _image_size(path: object) -> tuple[int, int]:
    """(width, height) of an image file, from its header only."""
    import warnings

    from PIL import Image

    with open(path, "rb") as fh:  # type: ignore[call-overload]
        size = _png_size(fh.read(24))
    if size is not None:
        return size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own decompression-bomb warning
            with Image.open(path) as im:  # type: ignore[arg-type]
                return im.size
    except Image.DecompressionBombError:
        return (MAX_IMAGE_PIXELS + 1, 1)  # larger than Pillow allows: larger than ours
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds
        raise ValueError(f"{path}: not a readable image ({type(exc).__name__})") from exc


def _npy_header(path: object) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a ``.npy`` file, from its header only."""
    from numpy.lib import format as npy

    with open(path, "rb") as fh:  # type: ignore[call-overload]
        try:
            version = npy.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = npy.read_array_header_1_0(fh)
            else:
                shape, _, dtype = npy.read_array_header_2_0(fh)
        except ValueError as exc:
            raise ValueError(f"{path}: not a readable .npy array ({exc})") from exc
    return tuple(shape), np.dtype(dtype)


LUMA_BT601 = (0.299, 0.587, 0.114)
"""Weights of red, green and blue in the grey level of a colour pixel: the luma of ITU-R
BT.601, as the Jetson bundle's runner (``export/onnx/templates/run_onnx.py``) computes it."""


def grey(pixels: np.ndarray) -> np.ndarray:
    """Grey levels of an image (h, w, channels): BT.601 luma of RGB or RGBA (alpha ignored),
    the first channel of grey or grey + alpha."""
    if pixels.shape[2] < 3:
        return np.asarray(pixels[..., 0], dtype=np.float64)
    red, green, blue = (np.asarray(pixels[..., k], dtype=np.float64) for k in range(3))
    return red * LUMA_BT601[0] + green * LUMA_BT601[1] + blue * LUMA_BT601[2]


def read_images(paths: list[str]) -> tuple[list[str], np.ndarray]:
    """Light images from PNG/JPEG (grey or colour, 8-bit or float) or ``.npy`` files, as
    (names, float64 (n, h, w) in [0, 1]); ``ValueError`` naming a file that is not one. Colour
    becomes grey by :func:`grey` (BT.601 luma).

    A ``.npy`` file holds one image (h, w), several (n, h, w), or retina rows (n, 400). Images
    of different sizes are all resampled onto the retina. Each file's size is read from its
    header and checked (:data:`MAX_IMAGE_PIXELS` an image, :data:`MAX_TOTAL_PIXELS` in all)
    before it is decoded.
    """
    from pathlib import Path

    names: list[str] = []
    images: list[np.ndarray] = []
    total = 0
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(2, "image file not found", str(path))
        if path.suffix.lower() == ".npy":
            shape, dtype = _npy_header(path)
            if dtype.hasobject or not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
                raise ValueError(f"{path}: an array of {dtype}; images are numbers")
            if np.issubdtype(dtype, np.complexfloating):
                raise ValueError(f"{path}: an array of {dtype}; images are real numbers")
            count = int(np.prod(shape, dtype=object))
            per_image = int(np.prod(shape[-2:], dtype=object)) if len(shape) >= 2 else count
            if per_image > MAX_IMAGE_PIXELS or total + count > MAX_TOTAL_PIXELS:
                raise ValueError(f"{path}: an array of shape {shape}; allowed at most "
                                 f"{MAX_IMAGE_PIXELS:,} pixels an image and "
                                 f"{MAX_TOTAL_PIXELS:,} in all")
            total += count
            try:
                arr = np.load(path, allow_pickle=False)
            except ValueError as exc:
                raise ValueError(f"{path}: not a readable .npy array ({exc})") from exc
            if arr.size == 0:
                raise ValueError(f"{path}: array of shape {arr.shape} holds no image")
            arr = np.asarray(arr, dtype=np.float64)
            if arr.ndim == 2 and arr.shape[1] == N_CELLS:
                arr = arr.reshape(-1, *RETINA_SHAPE)
            arr = arr[None] if arr.ndim == 2 else arr
            if arr.ndim != 3:
                raise ValueError(f"{path}: array of shape {arr.shape}; expected (h, w) or "
                                 "(n, h, w) images")
            names += [f"{path.name}[{i}]" if len(arr) > 1 else path.name
                      for i in range(len(arr))]
            images += list(arr)
            continue
        width, height = _image_size(path)
        if width * height > MAX_IMAGE_PIXELS or total + width * height > MAX_TOTAL_PIXELS:
            raise ValueError(f"{path}: an image of {width} x {height} pixels; allowed at most "
                             f"{MAX_IMAGE_PIXELS:,} pixels an image (e.g. 4096 x 4096) and "
                             f"{MAX_TOTAL_PIXELS:,} in all")
        total += width * height
        from matplotlib import image as mpimg

        try:
            img = np.asarray(mpimg.imread(path), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds
            raise ValueError(f"{path}: not a readable image ({type(exc).__name__})") from exc
        if img.ndim == 3:
            img = grey(img)
        if img.max(initial=0.0) > 1.0:
            img = img / 255.0
        names.append(path.name)
        images.append(img)
    if len({im.shape for im in images}) > 1:
        images = [resample(im[None])[0] for im in images]
    return names, np.stack(images)
