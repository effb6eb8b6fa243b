"""A two-layer perceptron in numpy, trained by backpropagation one card at a time.

The page's MLP for the XOR race: small enough to train a pass in a millisecond in every tab
of a classroom, without importing torch in the server (the notebooks use torch). Forward::

    h = sigmoid(W1 @ x + b1)        (n_hidden,)
    p = sigmoid(w2 . h + b2)        probability of class 1

and, for the cross-entropy loss ``-(y log p + (1 - y) log(1 - p))``, backward::

    dz2 = p - y;   dw2 = dz2 * h;   db2 = dz2
    dz1 = dz2 * w2 * h * (1 - h);   dW1 = outer(dz1, x);   db1 = dz1

each followed by a step of ``learning_rate`` against the gradient.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function ``1 / (1 + exp(-z))``."""
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


class TinyMLP:
    """One hidden layer of sigmoid units and one sigmoid output, for two classes."""

    def __init__(self, n_in: int, n_hidden: int = 8, learning_rate: float = 0.1,
                 rng: np.random.Generator | None = None) -> None:
        rng = np.random.default_rng(0) if rng is None else rng
        self.W1 = rng.normal(0.0, 1.0 / np.sqrt(n_in), (n_hidden, n_in))
        """Input-to-hidden weights (n_hidden, n_in)."""
        self.b1 = np.zeros(n_hidden)
        """Hidden biases."""
        self.w2 = rng.normal(0.0, 1.0 / np.sqrt(n_hidden), n_hidden)
        """Hidden-to-output weights."""
        self.b2 = 0.0
        """Output bias."""
        self.learning_rate = learning_rate
        """Step size of each gradient step."""

    def probability(self, X: np.ndarray) -> np.ndarray:
        """Probability of class 1 for each row of ``X`` (n, n_in)."""
        h = sigmoid(np.asarray(X, dtype=np.float64) @ self.W1.T + self.b1)
        return sigmoid(h @ self.w2 + self.b2)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class (0 or 1) of each row of ``X``."""
        return (self.probability(X) > 0.5).astype(np.int64)

    def train_pass(self, X: np.ndarray, y: np.ndarray, order: np.ndarray) -> int:
        """One gradient step per card, in ``order``; return the cards misclassified on the way
        (each judged before its own step)."""
        mistakes = 0
        for i in order:
            x, target = np.asarray(X[i], dtype=np.float64), float(y[i])
            h = sigmoid(self.W1 @ x + self.b1)
            p = float(sigmoid(np.array(h @ self.w2 + self.b2)))
            mistakes += (p > 0.5) != (target > 0.5)
            dz2 = p - target
            dz1 = dz2 * self.w2 * h * (1.0 - h)
            self.w2 -= self.learning_rate * dz2 * h
            self.b2 -= self.learning_rate * dz2
            self.W1 -= self.learning_rate * np.outer(dz1, x)
            self.b1 -= self.learning_rate * dz1
        return int(mistakes)
