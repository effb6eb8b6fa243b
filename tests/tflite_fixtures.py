"""TensorFlow Lite models for the tests, made by TensorFlow's own converter from Keras models.

``python -m tests.tflite_fixtures OUT`` trains small Keras MLPs on seeded synthetic data (64
features, 5 classes) and converts them with ``tf.lite.TFLiteConverter`` and full-integer
quantization (a representative dataset of 200 training rows); it writes into ``OUT``:

=============================  ===========================================================
``per_tensor.tflite``          64-48-24-5, ReLU, ReLU6, logits; int8 interface; weights
                               quantized per tensor
``per_channel.tflite``         the same model, weights quantized per output channel
``softmax_float_io.tflite``    8x8 input, Flatten (RESHAPE), 48-24-5 and a Softmax; per
                               channel; float32 interface (QUANTIZE / DEQUANTIZE)
``binary.tflite``              64-16-1 with a sigmoid (LOGISTIC); int8 interface
``float.tflite``               the first model, not quantized
``dynamic_range.tflite``       the first model, weights int8 and activations float
``conv2d.tflite``              an int8 model with a CONV_2D
``uint8_io.tflite``            the first model with a uint8 interface
``X_test.npy``, ``y_test.npy`` 300 held-out rows (float32) and their classes
=============================  ===========================================================

The tests run this once per session in a subprocess (:func:`fixture_dir`), so TensorFlow is
never imported by the test process; TFLite Micro and LiteRT run the models there.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

N_FEATURES, N_CLASSES = 64, 5
FILES = ("per_tensor.tflite", "per_channel.tflite", "softmax_float_io.tflite", "binary.tflite",
         "float.tflite", "dynamic_range.tflite", "conv2d.tflite", "uint8_io.tflite",
         "X_test.npy", "y_test.npy")


def make(out: Path) -> None:
    """Train, convert and write every fixture into ``out``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 1.0, (N_CLASSES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, 1500)
    X = (centres[y] + rng.normal(0.0, 3.0, (len(y), N_FEATURES))).astype(np.float32)
    X_train, y_train, X_test, y_test = X[:1200], y[:1200], X[1200:], y[1200:]
    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers

    def fit(model: tf.keras.Model, loss: str, target: np.ndarray) -> tf.keras.Model:
        model.compile(tf.keras.optimizers.Adam(0.01), loss)
        model.fit(X_train.reshape((-1, *model.input_shape[1:])), target, epochs=8,
                  batch_size=64, verbose=0)
        return model

    logits = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mlp = fit(tf.keras.Sequential([
        tf.keras.Input((N_FEATURES,)), layers.Dense(48, activation="relu"),
        layers.Dense(24, activation="relu6"), layers.Dense(N_CLASSES)]), logits, y_train)
    image = fit(tf.keras.Sequential([
        tf.keras.Input((8, 8)), layers.Flatten(), layers.Dense(48, activation="relu"),
        layers.Dense(24, activation="relu"), layers.Dense(N_CLASSES), layers.Softmax()]),
        "sparse_categorical_crossentropy", y_train)
    binary = fit(tf.keras.Sequential([
        tf.keras.Input((N_FEATURES,)), layers.Dense(16, activation="relu"),
        layers.Dense(1, activation="sigmoid")]), "binary_crossentropy", (y_train == 0) * 1.0)
    conv = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)), layers.Conv2D(2, 3, activation="relu"), layers.Flatten(),
        layers.Dense(N_CLASSES)])

    def convert(model: tf.keras.Model, *, per_channel: bool = True, integer: bool = True,
                io: object = tf.int8, calibrate: bool = True) -> bytes:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if calibrate:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if integer:
            shape = model.input_shape[1:]
            conv.representative_dataset = lambda: (
                [X_train[i: i + 1].reshape((1, *shape))] for i in range(200))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io is not None:
                conv.inference_input_type = io
                conv.inference_output_type = io
            conv._experimental_disable_per_channel_quantization_for_dense_layers = (
                not per_channel)
        return bytes(conv.convert())

    out.mkdir(parents=True, exist_ok=True)
    made = {
        "per_tensor.tflite": convert(mlp, per_channel=False),
        "per_channel.tflite": convert(mlp),
        "softmax_float_io.tflite": convert(image, io=None),
        "binary.tflite": convert(binary),
        "float.tflite": convert(mlp, integer=False, calibrate=False),
        "dynamic_range.tflite": convert(mlp, integer=False),
        "conv2d.tflite": convert(conv),
        "uint8_io.tflite": convert(mlp, io=tf.uint8),
    }
    for name, blob in made.items():
        (out / name).write_bytes(blob)
    np.save(out / "X_test.npy", X_test)
    np.save(out / "y_test.npy", y_test)


def tensorflow_missing() -> str:
    """Why the fixtures cannot be made here ("" when they can)."""
    import importlib.util

    for module in ("tensorflow", "tflite_micro", "ai_edge_litert"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[dev]')"
    return ""


@lru_cache(maxsize=1)
def fixture_dir() -> Path:
    """The fixtures, made once per process in a temporary folder (removed at exit)."""
    out = Path(tempfile.mkdtemp(prefix="mark1-tflite-"))
    atexit.register(shutil.rmtree, out, True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "tests.tflite_fixtures", str(out)], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not all((out / f).is_file() for f in FILES):
        raise RuntimeError(f"making the TFLite fixtures failed:\n{done.stderr[-3000:]}")
    return out


if __name__ == "__main__":
    make(Path(sys.argv[1]))
