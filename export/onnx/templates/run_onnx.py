#!/usr/bin/env python3
"""Run the bundled ONNX model on images or .npy files and print the class of each.

Needs Python 3.6 or newer, numpy and onnxruntime, nothing else. On a Jetson the onnxruntime-gpu
wheel for JetPack brings the TensorRT and CUDA execution providers; this script uses TensorRT
(fp16 when the bundle says so), else CUDA, else the CPU.

Inputs (any number, mixed):
  PNG (8/16-bit grey, grey+alpha, RGB, RGBA, palette; not interlaced), PGM/PPM (P2, P3, P5, P6):
      one image each; colour becomes luminance (0.299 R + 0.587 G + 0.114 B), alpha is ignored.
  .npy: (h, w) one image, (n, h, w) n images, (400,) or (n, 400) retina images row by row.
      Floats must be in [0, 1]; uint8 is divided by 255, uint16 by 65535.
Each image is relative illuminance (0 dark, 1 lit: figure light on a dark ground, as the retina
sees a lit card); --invert turns dark-on-light pictures round. Images of any size are averaged
by area onto the 20 x 20 retina, as the model expects.

A model made elsewhere (model.json: preprocessing "features") takes its own feature vectors:
.npy files only, each (n, features...) or one input without the first axis, with as many values
per input as the model takes; the values are fed as they are.

Output: one line per image, "SOURCE<TAB>CLASS"; --scores adds the score of the class.
Exit status: 0 success, 2 bad input or bundle.
"""

import argparse
import hashlib
import json
import os
import struct
import sys
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class InputError(Exception):
    """A bad input file or argument: reported on one line, exit status 2."""


# ----------------------------------------------------------------------------- image files


def _luminance(pixels, channels):
    """(h, w, channels) in [0, 1] -> (h, w) luminance; alpha is ignored."""
    if channels in (1, 2):
        return pixels[:, :, 0]
    return pixels[:, :, 0] * 0.299 + pixels[:, :, 1] * 0.587 + pixels[:, :, 2] * 0.114


def _png_chunks(data, path):
    if not data.startswith(PNG_SIGNATURE):
        raise InputError("{}: not a PNG file".format(path))
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if len(body) != length or zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise InputError("{}: damaged PNG (chunk {!r} fails its CRC)".format(path, kind))
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length
    raise InputError("{}: truncated PNG (no IEND chunk)".format(path))


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw, height, stride, bpp, path):
    """Undo the PNG row filters; returns a uint8 array (height, stride)."""
    if len(raw) != height * (stride + 1):
        raise InputError("{}: PNG image data has the wrong size".format(path))
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        row = np.frombuffer(raw[start + 1:start + 1 + stride], dtype=np.uint8).astype(np.int64)
        if kind == 0:
            cur = row
        elif kind == 1:
            lanes = np.concatenate([row, np.zeros((-stride) % bpp, dtype=np.int64)])
            cur = (np.cumsum(lanes.reshape(-1, bpp), axis=0).ravel()[:stride]) % 256
        elif kind == 2:
            cur = (row + prev) % 256
        elif kind in (3, 4):
            line = row.tolist()
            up = prev.tolist()
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                if kind == 3:
                    line[i] = (line[i] + (left + up[i]) // 2) % 256
                else:
                    corner = up[i - bpp] if i >= bpp else 0
                    line[i] = (line[i] + _paeth(left, up[i], corner)) % 256
            cur = np.array(line, dtype=np.int64)
        else:
            raise InputError("{}: unknown PNG filter type {}".format(path, kind))
        out[y] = cur
        prev = cur
    return out


def read_png(path):
    """A PNG file as luminance (h, w) in [0, 1]."""
    with open(path, "rb") as fh:
        data = fh.read()
    header, palette, idat = None, None, []
    for kind, body in _png_chunks(data, path):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3) / 255.0
        elif kind == b"IDAT":
            idat.append(body)
    if header is None or not idat:
        raise InputError("{}: PNG without header or image data".format(path))
    width, height, depth, colour, _, _, interlace = header
    if colour not in PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise InputError("{}: unsupported PNG colour type {} / depth {}".format(
            path, colour, depth))
    if interlace:
        raise InputError("{}: interlaced PNG is not supported; save it without interlacing"
                         .format(path))
    if colour == 3 and palette is None:
        raise InputError("{}: palette PNG without a palette".format(path))
    channels = PNG_CHANNELS[colour]
    bits = channels * depth
    stride = (width * bits + 7) // 8
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise InputError("{}: damaged PNG image data ({})".format(path, exc))
    rows = _unfilter(raw, height, stride, max(1, bits // 8), path)
    if depth == 16:
        samples = rows.reshape(height, -1).view(">u2").astype(np.float64)
    elif depth == 8:
        samples = rows.astype(np.float64)
    else:
        per_byte = 8 // depth
        shifts = np.arange(8 - depth, -1, -depth)
        unpacked = (rows[:, :, None] >> shifts) & ((1 << depth) - 1)
        samples = unpacked.reshape(height, stride * per_byte).astype(np.float64)
    samples = samples[:, :width * channels].reshape(height, width, channels)
    if colour == 3:
        index = samples[:, :, 0].astype(np.int64)
        if index.max() >= len(palette):
            raise InputError("{}: PNG palette index out of range".format(path))
        return _luminance(palette[index], 3)
    return _luminance(samples / float((1 << depth) - 1), channels)


def read_pnm(path):
    """A PGM/PPM file (P2, P3, P5, P6) as luminance (h, w) in [0, 1]."""
    with open(path, "rb") as fh:
        data = fh.read()
    tokens, pos = [], 2
    magic = data[:2]
    if magic not in (b"P2", b"P3", b"P5", b"P6"):
        raise InputError("{}: not a PGM/PPM file (P2, P3, P5 or P6)".format(path))
    while len(tokens) < 3:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            while pos < len(data) and data[pos:pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise InputError("{}: truncated PGM/PPM header".format(path))
        tokens.append(data[start:pos])
    try:
        width, height, maxval = (int(t) for t in tokens)
    except ValueError:
        raise InputError("{}: bad PGM/PPM header".format(path))
    if width < 1 or height < 1 or not 0 < maxval < 65536:
        raise InputError("{}: bad PGM/PPM size or maximum value".format(path))
    channels = 3 if magic in (b"P3", b"P6") else 1
    count = width * height * channels
    if magic in (b"P2", b"P3"):
        values = np.array(data[pos:].split()[:count], dtype=np.float64)
    else:
        body = data[pos + 1:]
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
        values = np.frombuffer(body[:count * dtype.itemsize], dtype=dtype).astype(np.float64)
    if values.size != count:
        raise InputError("{}: truncated PGM/PPM image data".format(path))
    return _luminance(values.reshape(height, width, channels) / float(maxval), channels)


def read_npy(path):
    """A .npy file as a list of (h, w) images in [0, 1]."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError("{}: not a readable .npy file ({})".format(path, exc))
    if arr.dtype == np.uint8:
        arr = arr / 255.0
    elif arr.dtype == np.uint16:
        arr = arr / 65535.0
    elif arr.dtype.kind not in "fb":
        raise InputError("{}: .npy dtype {} is not an image (use floats in [0, 1] or uint8)"
                         .format(path, arr.dtype))
    arr = arr.astype(np.float64)
    if arr.ndim == 1 and arr.size == 400:
        arr = arr.reshape(1, 20, 20)
    elif arr.ndim == 2 and arr.shape[1] == 400:
        arr = arr.reshape(-1, 20, 20)
    elif arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise InputError("{}: .npy shape {} is not (h, w), (n, h, w), (400,) or (n, 400)"
                         .format(path, arr.shape))
    if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
        raise InputError("{}: values must be finite and in [0, 1] (divide 8-bit data by 255)"
                         .format(path))
    return list(arr)


def load_images(path):
    """(label, image (h, w)) pairs from one file."""
    if not os.path.isfile(path):
        raise InputError("{}: no such file".format(path))
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x93NUMPY"):
        images = read_npy(path)
        if len(images) == 1:
            return [(path, images[0])]
        return [("{}[{}]".format(path, i), img) for i, img in enumerate(images)]
    if head.startswith(PNG_SIGNATURE):
        return [(path, read_png(path))]
    if head[:2] in (b"P2", b"P3", b"P5", b"P6"):
        return [(path, read_pnm(path))]
    raise InputError("{}: not a PNG, PGM/PPM or .npy file".format(path))


# ----------------------------------------------------------------------------- the retina


def area_matrix(n_in, n_out):
    """(n_out, n_in): the share of each input pixel inside each output cell."""
    edges_in = np.linspace(0.0, 1.0, n_in + 1)
    edges_out = np.linspace(0.0, 1.0, n_out + 1)
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    overlap = np.clip(hi - lo, 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def to_retina(image, shape):
    """Average an (h, w) image by area onto the retina grid ``shape``."""
    h, w = image.shape
    if (h, w) == tuple(shape):
        return image.astype(np.float64)
    return area_matrix(h, shape[0]).dot(image).dot(area_matrix(w, shape[1]).T)


# ----------------------------------------------------------------------------- the model


def load_bundle(folder):
    """model.json of the bundle, after checking model.onnx against its recorded SHA-256."""
    meta_path = os.path.join(folder, "model.json")
    try:
        with open(meta_path) as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError("{}: cannot read the bundle description ({})".format(meta_path, exc))
    model_path = os.path.join(folder, meta["model_file"])
    try:
        with open(model_path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
    except OSError as exc:
        raise InputError("{}: cannot read the model ({})".format(model_path, exc))
    if digest != meta["sha256"]:
        raise InputError("{}: SHA-256 differs from model.json; copy the bundle again"
                         .format(model_path))
    meta["model_path"] = model_path
    return meta


def choose_providers(requested, available, meta):
    """Execution providers to ask onnxruntime for, best first (CPU always last)."""
    if requested == "auto":
        names = [p for p in meta["providers"] if p in available]
    else:
        name = PROVIDER_NAMES[requested]
        if name not in available:
            raise InputError("execution provider {} is not in this onnxruntime (it has {})"
                             .format(name, ", ".join(available)))
        names = [name]
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    chosen = []
    for name in names:
        if name == "TensorrtExecutionProvider":
            options = {
                "trt_fp16_enable": "True" if meta["precision"] == "fp16" else "False",
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": os.path.dirname(meta["model_path"]),
            }
            chosen.append((name, options))
        else:
            chosen.append(name)
    return chosen


def read_features(path, shape):
    """Feature vectors from a .npy file: (n, d) float64 rows, d = the product of ``shape``."""
    with open(path, "rb") as fh:
        if not fh.read(6).startswith(b"\x93NUMPY"):
            raise InputError("{}: this model takes feature vectors in .npy files, not images"
                             .format(path))
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError("{}: not a readable .npy file ({})".format(path, exc))
    if arr.dtype.kind not in "fiub":
        raise InputError("{}: .npy dtype {} holds no numbers".format(path, arr.dtype))
    width = int(np.prod(shape))
    if arr.size == width and (arr.ndim == 1 or list(arr.shape) == list(shape)):
        arr = arr.reshape(1, width)
    if arr.ndim < 2 or arr.shape[0] == 0 or int(np.prod(arr.shape[1:])) != width:
        raise InputError("{}: .npy shape {} does not hold {} values per input (the model takes "
                         "{})".format(path, arr.shape, width, tuple(shape)))
    rows = arr.reshape(arr.shape[0], width).astype(np.float64)
    if not np.isfinite(rows).all():
        raise InputError("{}: values must be finite".format(path))
    return rows


def classify(session, meta, batch, batch_size):
    """Scores and class indices for input rows (n, features), fed in the model's input type."""
    input_name = meta["inputs"][0]["name"]
    item_shape = [int(d) for d in meta["inputs"][0]["shape"][1:]]
    output_names = [o["name"] for o in meta["outputs"]]
    which = output_names.index(meta["class_output"])
    scores = []
    dtype = np.dtype(meta["inputs"][0].get("dtype", "float32"))
    for lo in range(0, len(batch), batch_size):
        rows = batch[lo:lo + batch_size].reshape([-1] + item_shape).astype(dtype)
        out = session.run(None, {input_name: rows})
        scores.append(np.asarray(out[which], dtype=np.float64).reshape(len(rows), -1))
    scores = np.concatenate(scores, axis=0)
    decision = meta.get("decision", {"rule": "argmax"})
    if decision["rule"] == "above":
        return scores, (scores[:, 0] > decision["threshold"]).astype(np.int64)
    return scores, scores.argmax(axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Classify images with the bundled ONNX model (prints SOURCE<TAB>CLASS).")
    parser.add_argument("inputs", nargs="+", metavar="FILE", help="PNG, PGM/PPM or .npy files")
    parser.add_argument("--provider", choices=["auto", "tensorrt", "cuda", "cpu"],
                        default="auto", help="execution provider (default: best available)")
    parser.add_argument("--invert", action="store_true",
                        help="invert the images (for dark figures on a light ground)")
    parser.add_argument("--scores", action="store_true", help="also print the class score")
    parser.add_argument("--batch", type=int, default=64, help="images per inference call")
    parser.add_argument("--bundle", default=HERE, help="bundle folder (default: this one)")
    args = parser.parse_args(argv)
    try:
        if args.batch < 1:
            raise InputError("--batch must be at least 1; got {}".format(args.batch))
        meta = load_bundle(args.bundle)
        shape = meta["preprocessing"]["shape"]
        labels, rows = [], []
        for path in args.inputs:
            if meta["preprocessing"].get("input") == "features":
                if not os.path.isfile(path):
                    raise InputError("{}: no such file".format(path))
                found = read_features(path, shape)
                names = [path] if len(found) == 1 else ["{}[{}]".format(path, i)
                                                        for i in range(len(found))]
                labels.extend(names)
                rows.extend(found)
                continue
            for label, image in load_images(path):
                retina = to_retina(image, shape)
                if args.invert:
                    retina = 1.0 - retina
                labels.append(label)
                rows.append(retina.reshape(-1))
        batch = np.array(rows, dtype=np.float32)
        import onnxruntime

        providers = choose_providers(args.provider, onnxruntime.get_available_providers(), meta)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(meta["model_path"], sess_options=options,
                                               providers=providers)
    except InputError as exc:
        sys.stderr.write("run_onnx: error: {}\n".format(exc))
        return 2
    scores, index = classify(session, meta, batch, args.batch)
    sys.stderr.write("run_onnx: {} image(s) on {}\n".format(
        len(labels), ", ".join(session.get_providers())))
    for label, k, row in zip(labels, index, scores):
        line = "{}\t{}".format(label, meta["classes"][int(k)])
        if args.scores:
            line += "\t{:.6g}".format(row[min(int(k), len(row) - 1)])
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
