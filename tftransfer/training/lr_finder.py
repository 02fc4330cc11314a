"""A learning-rate range test (Smith, 2015) for the head, on cached features.

The head's best learning rate depends on the data: how many classes, how
separable the base's features are, the batch size. The range test trains a
copy of the head for a few hundred steps while the rate grows geometrically
from `min_rate` to `max_rate`, and records the loss. The loss falls, then
rises sharply once the rate is too large; the rate picked is a tenth of the
rate at the lowest smoothed loss, a common rule (it is what fastai's
`lr_find` first suggested) that stays clear of the unstable edge.

On cached features each step is one small Dense layer, so the whole test
costs seconds; the head that trains afterwards is untouched.
"""

import dataclasses
import math

import keras
import numpy as np

from tftransfer.errors import TransferError


@dataclasses.dataclass
class RateSearch:
    """The result of a learning-rate range test.

    Attributes:
        rate: The learning rate picked: a tenth of `lowest`.
        lowest: The rate at which the smoothed loss was lowest.
        rates: The rate of each step.
        losses: The smoothed training loss after each step.
    """

    rate: float
    lowest: float
    rates: list
    losses: list

    def plot(self, path):
        """Saves the loss-versus-rate curve, with the picked rate marked, as a PNG.

        Args:
            path: Where the PNG goes.

        Returns:
            `path`.
        """
        from matplotlib.figure import Figure  # Off pyplot: notebooks keep their backend.

        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        ax.plot(self.rates, self.losses)
        ax.axvline(self.rate, color="C1", linestyle="--",
                   label=f"picked {self.rate:.2g}")
        ax.axvline(self.lowest, color="C2", linestyle=":",
                   label=f"lowest loss {self.lowest:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss (smoothed)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return path


def find_learning_rate(model, data, *, loss="sparse_categorical_crossentropy",
                       min_rate=1e-6, max_rate=1.0, steps=200, smoothing=0.9):
    """Runs a learning-rate range test on a copy of `model`.

    Args:
        model: The Keras model to test (usually the head); its weights are
            not changed.
        data: `(inputs, labels)` batches, e.g. cached features; repeated if
            shorter than `steps`.
        loss: The loss to train with.
        min_rate: The first step's rate.
        max_rate: The last step's rate.
        steps: The number of steps; the test stops early once the loss
            diverges (4x its lowest).
        smoothing: The exponential smoothing of the recorded loss.

    Returns:
        A `RateSearch`.
    """
    if not 0 < min_rate < max_rate:
        raise TransferError(f"need 0 < min_rate < max_rate, got {min_rate} and {max_rate}")
    trial = keras.models.clone_model(model)
    trial.set_weights(model.get_weights())
    trial.trainable = True
    optimizer = keras.optimizers.Adam(min_rate)
    trial.compile(optimizer=optimizer, loss=loss)
    growth = (max_rate / min_rate) ** (1 / max(1, steps - 1))
    rates, losses = [], []
    smoothed, best = 0.0, math.inf
    batches = iter(data.repeat())
    for step in range(steps):
        rate = min_rate * growth**step
        optimizer.learning_rate.assign(rate)
        inputs, labels = next(batches)
        value = float(trial.train_on_batch(inputs, labels))
        if not math.isfinite(value):
            break
        smoothed = smoothing * smoothed + (1 - smoothing) * value
        debiased = smoothed / (1 - smoothing ** (step + 1))
        rates.append(rate)
        losses.append(debiased)
        best = min(best, debiased)
        if step > 10 and debiased > 4 * best:
            break
    if len(losses) < 5:
        raise TransferError("the learning-rate range test diverged at once; lower "
                            f"min_rate (now {min_rate})")
    lowest = rates[int(np.argmin(losses))]
    return RateSearch(rate=lowest / 10, lowest=lowest, rates=rates, losses=losses)
