"""Which weights `fine_tune` keeps once the top phase has run: paired evidence.

On a few dozen validation images, the head phase's and the top phase's
accuracies are both near their ceiling and one image moves them by 2 or 3
points, so comparing the two figures cannot tell a top phase that helped
from one that memorised its training images. Comparing them image by image
can: only the images that one set of weights gets right and the other
wrong carry information (McNemar's test).

Three candidates are scored on the same validation images: the average of
both phases' weights (WiSE-FT, Wortsman et al., CVPR 2022), which lies
between the pretrained features and the fine-tuned ones, the top phase's
weights and the head phase's. The average is kept unless one phase's own
weights beat it clearly on those images (`choose_kept`, `KEEP_RULE`).
Across the benchmark's cells on both bases, the average was never below the
head alone on the test sets; the top phase's weights scored about the same
on the mean (0.1 point more) but lost up to 1.9 points to the head alone in
one cell (bench/keep_rules.py).
"""

import math
from typing import Sequence

import numpy as np

from tftransfer.metrics import mean_average_precision
from tftransfer.training.phases import finite_or_inf, kept_epoch_logs

#: How `choose_kept` decides, in words.
KEEP_RULE = ("the average of the head and top phases' weights (WiSE-FT), unless the top "
             "phase's training loss ended higher than the head's (it diverged: the head's), "
             "or on the same validation images the top phase's or the head phase's weights "
             "get more right than the average by a one-sided sign test (McNemar's, exact) "
             "at p < {alpha}; then the one with the lower p")
#: The sign test's level: how sure the evidence against the top phase must be.
ALPHA = 0.1
#: How `multi_label_kept` decides, in words.
MULTI_LABEL_KEEP_RULE = ("the top phase is kept unless its exact validation average "
                         "precision (mean over the labels) is lower than the head's; without "
                         "validation data, unless its training loss is higher")


def average_weights(first: Sequence[np.ndarray], second: Sequence[np.ndarray],
                    alpha: float = 0.5) -> list:
    """`(1 - alpha) * first + alpha * second`, weight by weight.

    Args:
        first, second: Two lists of a model's weights (`get_weights()`).
        alpha: The share of `second`.

    Returns:
        The averaged list; non-float weights (counters, seeds) come from
        `second`.

    Example:
    >>> average_weights([np.array([0.0, 2.0])], [np.array([2.0, 4.0])])[0].tolist()
    [1.0, 3.0]
    """
    return [(1 - alpha) * a + alpha * b if np.issubdtype(np.asarray(b).dtype, np.floating)
            else b for a, b in zip(first, second)]


def paired_wins(labels: np.ndarray, first: np.ndarray, second: np.ndarray) -> tuple:
    """The images only `second` gets right, and those only `first` does.

    Args:
        labels: Integer labels, `[rows]`.
        first, second: Class probabilities, `[rows, classes]`.

    Returns:
        `(second_only, first_only)`, two counts.

    Example:
    >>> labels = np.array([0, 1, 1])
    >>> first = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]])
    >>> second = np.array([[0.9, 0.1], [0.3, 0.7], [0.4, 0.6]])
    >>> paired_wins(labels, first, second)
    (1, 0)
    """
    right_first = np.argmax(first, axis=1) == labels
    right_second = np.argmax(second, axis=1) == labels
    return int(np.sum(right_second & ~right_first)), int(np.sum(right_first & ~right_second))


def sign_test(wins: int, losses: int) -> float:
    """The one-sided exact p-value of `wins` against `losses` if neither side is better.

    Example:
    >>> sign_test(4, 0), sign_test(3, 0), sign_test(0, 2)
    (0.0625, 0.125, 1.0)
    """
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n if n else 1.0


def choose_kept(labels: np.ndarray, probabilities: dict, alpha: float = ALPHA) -> tuple:
    """Chooses the weights to keep from paired validation results (`KEEP_RULE`).

    The average of both phases' weights stands unless the evidence for one
    phase's own weights is paired and clear: they get more of the same
    images right by a sign test at `alpha`. A comparison of losses is no
    guard here: on a few dozen images a top phase that is more accurate is
    often also more confident in its few mistakes, and rules that asked for
    a lower loss gave up its gains (bench/keep_rules.py).

    Args:
        labels: The validation images' integer labels.
        probabilities: `{"head": ..., "top": ..., "average": ...}`, each
            the class probabilities of those images under those weights.
        alpha: The sign test's level.

    Returns:
        `(name, reason)`: one of the keys, and a line for the log.
    """
    wins = {name: paired_wins(labels, probabilities["average"], probabilities[name])
            for name in ("top", "head")}
    p = {name: sign_test(*counts) for name, counts in wins.items()}
    best = min(p, key=lambda name: p[name])  # The top phase's on a tie.
    said = "; ".join(f"the {name} phase's get {w} images right that the average gets "
                     f"wrong, {l} the other way (p = {p[name]:.3g})"
                     for name, (w, l) in wins.items())
    counts = f"{len(labels)} validation images"
    if p[best] >= alpha:
        return "average", (f"kept the average of the head and top phases' weights: {said} "
                           f"({counts})")
    return best, f"kept the {best} phase's weights: {said} ({counts})"


def top_lost(head, top, plan, monitor: str) -> bool:
    """Whether the top phase ended with a higher `monitor` than the head, at their kept epochs.

    Used where paired scores cannot tell: without validation data (the
    training loss), and to see a top phase that diverged.

    Args:
        head, top: The phases' Keras `History`.
        plan: The `Plan` they ran.
        monitor: The value early stopping watched (`"val_loss"` or `"loss"`).

    Returns:
        A bool.
    """
    first = kept_epoch_logs(head, plan.head.phase, monitor)
    second = kept_epoch_logs(top, plan.top.phase, monitor)
    return finite_or_inf(second.get(monitor)) > finite_or_inf(first.get(monitor))


def multi_label_kept(labels: np.ndarray, head: np.ndarray, top: np.ndarray) -> tuple:
    """A multi-label model's kept weights, by the exact validation mAP (`MULTI_LABEL_KEEP_RULE`).

    Args:
        labels: The validation images' multi-hot labels.
        head, top: Each phase's weights' probabilities on those images.

    Returns:
        `(kept, reason)`: `"head"` or `"top"`, and one line that says why.
    """
    first, second = mean_average_precision(labels, head), mean_average_precision(labels, top)
    if first is None:
        return "top", "kept the top phase's weights: no validation label has a positive"
    kept = "head" if second < first else "top"
    return kept, (f"kept the {kept} phase's weights: validation mAP {second:.4f} (top) "
                  f"against {first:.4f} (head)")
