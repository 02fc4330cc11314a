"""The two phases of `fine_tune` and their defaults.

A `Phase` says how long a phase runs, how fast it learns and which layers
train. `HEAD` is phase 1, the head (the new head on the frozen base), and
`TOP` phase 2, the top (the top of the base too); `fine_tune` takes one of
each, as `head=` and `top=`. Here too:
a phase's learning-rate schedule, and which of its epochs it kept.
"""

import dataclasses
import math
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

from tftransfer.defaults import NO_UNFREEZE
from tftransfer.errors import TransferError

if TYPE_CHECKING:
    import keras



@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of `fine_tune`: how long, how fast, and what trains.

    Attributes:
        epochs: The most epochs; early stopping usually ends the phase
            sooner. 0 skips the phase.
        learning_rate: Adam's learning rate (the peak, with `decay`). For
            the head, `"auto"` picks it with a learning-rate range test on
            the cached features (see `tftransfer.training.lr_finder`).
        unfreeze: The backbone layers that train, as in `set_trainable`:
            `"none"` (only the head, `NO_UNFREEZE`), `"all"`, an int N > 0
            (the top N), the
            name of the lowest layer to train, or `"auto"`: a fraction of
            the backbone that grows with the images per class (see
            `auto.AUTO_UNFREEZE`).
        warmup_epochs: With `decay`, the rate ramps up from a tenth of its
            peak over this many epochs first.
        decay: `"cosine"` decays the rate to 0 over the phase's epochs;
            `None` keeps it constant.
        patience: Epochs without improvement of the monitored loss before
            the phase stops; its best weights are then restored. `None`
            runs every epoch and keeps the last weights, which with a
            cosine `decay` were trained at the lowest rates.

    Example:
    >>> Phase(epochs=10, learning_rate=1e-5, unfreeze="all").unfreeze
    'all'
    >>> Phase.top(unfreeze=40)
    Phase(epochs=20, learning_rate=0.0001, unfreeze=40, warmup_epochs=1, decay='cosine', patience=None)
    """

    epochs: int
    learning_rate: float
    unfreeze: object = "none"
    warmup_epochs: int = 0
    decay: Optional[str] = None
    patience: Optional[int] = 5

    def __post_init__(self):
        if self.unfreeze is None or (isinstance(self.unfreeze, int) and self.unfreeze <= 0):
            raise TransferError(f"unfreeze={self.unfreeze!r}: pass {NO_UNFREEZE!r} to train "
                                "no backbone layer, or a positive count")

    @property
    def trains_backbone(self):
        """Whether the phase runs and trains part of the backbone.

        Example:
        >>> Phase.top(epochs=0).trains_backbone
        False
        >>> Phase.top(unfreeze=3).trains_backbone
        True
        """
        return self.epochs > 0 and self.unfreeze != NO_UNFREEZE

    @classmethod
    def head(cls, **changes):
        """Returns phase 1's defaults (`HEAD`) with `changes`, e.g. `epochs=10`."""
        return dataclasses.replace(HEAD, **changes)

    @classmethod
    def top(cls, **changes):
        """Returns phase 2's defaults (`TOP`) with `changes`, e.g. `unfreeze=40`."""
        return dataclasses.replace(TOP, **changes)

    def schedule(self, peak: float, steps_per_epoch: Optional[int]
                 ) -> Union[float, "keras.optimizers.schedules.LearningRateSchedule"]:
        """The learning rate of this phase, for the optimizer.

        Args:
            peak: The rate (`learning_rate`, scaled for the replicas).
            steps_per_epoch: Batches an epoch, or `None` if unknown.

        Returns:
            `peak`, or with `decay="cosine"` a schedule that warms up from
            `peak / 10` over `warmup_epochs` and decays to 0 at the last
            step (`peak` again if the number of steps is unknown).
        """
        import keras  # Here, so that the CLI reads the defaults without loading Keras.

        if self.decay is None:
            return peak
        if self.decay != "cosine":
            raise TransferError(f"unknown decay {self.decay!r}; use 'cosine' or None")
        if steps_per_epoch is None:
            return peak  # An unknown length: keep the rate constant.
        warmup = min(self.warmup_epochs, self.epochs) * steps_per_epoch
        if warmup == 0:
            return keras.optimizers.schedules.CosineDecay(peak, self.epochs * steps_per_epoch)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=peak / 10, warmup_target=peak, warmup_steps=warmup,
            decay_steps=max(1, self.epochs * steps_per_epoch - warmup))


#: Phase 1, the head: the new head alone, on the frozen base's cached features.
HEAD = Phase(epochs=50, learning_rate=1e-3)
#: Phase 2, the top: the top of the backbone too (`"auto"`: a share that grows
#: with the data), at a rate 10x lower, warmed up and decayed over all its epochs.
#: No early stopping: on a validation split of a few hundred photos the
#: loss swings from epoch to epoch while the rate is high, and stopping on
#: it cut the top phase short where its last epochs were the most accurate
#: (docs/benchmarks.md#the-top-phase-when-to-stop-and-which-weights-to-keep).
TOP = Phase(epochs=20, learning_rate=1e-4, unfreeze="auto", warmup_epochs=1,
            decay="cosine", patience=None)


def kept_index(history, phase, monitor):
    """Which epoch's weights a phase kept: its best, or with no `patience`, its last.

    Args:
        history: The phase's Keras `History`.
        phase: The `Phase` it ran.
        monitor: The value early stopping watched, e.g. `"val_loss"`.

    Returns:
        The epoch's index in `history`, or `None` if it has no `monitor`
        values.
    """
    values = [finite_or_inf(v) for v in history.history.get(monitor, [])]
    if not values:
        return None
    return len(values) - 1 if phase.patience is None else int(np.argmin(values))


def kept_epochs(history, phase, monitor):
    """The number of epochs up to the one whose weights a phase kept.

    Args:
        history, phase, monitor: As in `kept_index`.

    Returns:
        The count, at least 1, from the phase's first epoch (before a
        resume too).
    """
    kept = kept_index(history, phase, monitor)
    if kept is None:
        return max(1, len(history.epoch))
    # Epoch numbers count the epochs before a resume too.
    resumed = len(history.epoch) != len(history.history[monitor])
    return kept + 1 if resumed else history.epoch[kept] + 1


def kept_epoch_logs(history, phase, monitor):
    """The logs of the epoch whose weights a phase kept.

    Args:
        history, phase, monitor: As in `kept_index`.

    Returns:
        `{name: value}` of that epoch, or `{}` if none was kept.
    """
    kept = kept_index(history, phase, monitor)
    if kept is None:
        return {}
    return {key: logs[kept] for key, logs in history.history.items() if len(logs) > kept}


def finite_or_inf(value):
    """`value`, or infinity if it is `None` or not finite (a loss that diverged)."""
    return value if value is not None and math.isfinite(value) else math.inf
