"""What a multi-label classifier learned: average precision, F1, per-label metrics.

`multi_label_report` computes a `LabelReport` with numpy from multi-hot
labels, predicted probabilities and the per-label thresholds, so that
every number can be checked by hand:

* a label's average precision (AP) ranks the examples by its score and
  sums the precision at each distinct score, weighted by the recall it
  adds: AP = sum_n (R_n - R_(n-1)) P_n, as scikit-learn's
  `average_precision_score`; it does not depend on the threshold;
* mAP is the mean AP over the labels that have a positive example;
* precision, recall and F1 of a label count its decisions at its threshold
  (precision 0 when it is never predicted, recall 0 when it has no
  positive, with a note);
* micro F1 pools every label's decisions; macro F1 is the mean of the F1
  of the labels that have a positive example;
* subset accuracy is the share of examples whose every label is decided
  right.
"""

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tftransfer.errors import TransferError
from tftransfer.metrics import average_precision, precision_recall_curve, scores_of_counts

#: The keys of a multi-label `report.json`, in order.
LABEL_REPORT_KEYS = ("mean_average_precision", "micro_f1", "macro_f1", "subset_accuracy",
                     "per_label", "thresholds", "top_losses", "class_names",
                     "num_examples", "unlabelled", "skipped")


@dataclasses.dataclass
class LabelReport:
    """An evaluation of a multi-label classifier on labelled examples.

    Attributes:
        mean_average_precision: mAP (see the module docstring).
        micro_f1: F1 of every decision pooled.
        macro_f1: The mean F1 of the labels present.
        subset_accuracy: The share of examples with every label right.
        per_label: `{name: {"precision", "recall", "f1",
            "average_precision", "support", "threshold"}}`; a label with no
            positive example, or never predicted, has a `"note"`.
        thresholds: The threshold of each label, in label order.
        top_losses: The examples with a wrong decision and the highest
            loss, worst first: `{"index", "file", "true", "predicted",
            "loss"}`, `true` and `predicted` being lists of label names.
        class_names: The label names, in output order.
        num_examples: The number of examples scored.
        unlabelled: The examples that carry no label.
        skipped: `{path: reason}` of the files that `evaluate` could not
            read, so were not scored.
        curves: `{name: (precision, recall)}` arrays for the PR curves
            (not in `report.json`).
    """

    mean_average_precision: float
    micro_f1: float
    macro_f1: float
    subset_accuracy: float
    per_label: dict
    thresholds: list
    top_losses: list
    class_names: list
    num_examples: int
    unlabelled: int
    skipped: dict = dataclasses.field(default_factory=dict)
    curves: dict = dataclasses.field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """Returns exactly the keys of `report.json` (`LABEL_REPORT_KEYS`)."""
        return {key: getattr(self, key) for key in LABEL_REPORT_KEYS}

    def summary(self) -> str:
        """One line: mAP, micro and macro F1, subset accuracy."""
        return (f"mAP {self.mean_average_precision:.4f}, micro F1 {self.micro_f1:.4f}, "
                f"macro F1 {self.macro_f1:.4f}, subset accuracy "
                f"{self.subset_accuracy:.4f} on {self.num_examples} examples")

    def save(self, folder, *, history=None, images=None, title="Evaluation report",
             notes=()):
        """Writes `report.json`, `report.html` and its PNGs into `folder`.

        Args:
            folder, history, images, title, notes: As in `Report.save`.

        Returns:
            The path of `report.html`.
        """
        from tftransfer.reports.label_page import write_label_report_page

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.json").write_text(json.dumps(self.to_dict(), indent=1))
        return write_label_report_page(self, folder, history=history, images=images,
                                       title=title, notes=notes)


def multi_label_report(labels: np.ndarray, probabilities: np.ndarray,
                       class_names: Sequence[str], thresholds: Optional[Sequence[float]] = None,
                       *, files: Optional[Sequence[str]] = None,
                       num_top_losses: int = 16) -> LabelReport:
    """Computes a `LabelReport` from multi-hot labels and predicted probabilities.

    Args:
        labels: Multi-hot labels, shape `[n, labels]`.
        probabilities: Predicted probabilities, the same shape.
        class_names: The label names, in output order.
        thresholds: Each label's threshold (default 0.5 for all).
        files: The file of each example, for `top_losses`, or `None`.
        num_top_losses: How many examples to keep in `top_losses`.

    Returns:
        A `LabelReport`.

    Example:
    >>> report = multi_label_report([[1, 0], [1, 1], [0, 1]],
    ...                             [[0.9, 0.2], [0.6, 0.3], [0.2, 0.8]], ["cat", "dog"])
    >>> report.mean_average_precision, round(report.micro_f1, 4)
    (1.0, 0.8571)
    """
    truth = np.asarray(labels, np.float64) > 0.5
    scores = np.asarray(probabilities, np.float64)
    names = [str(name) for name in class_names]
    if scores.ndim != 2 or scores.shape != truth.shape or scores.shape[1] != len(names):
        raise TransferError(f"labels {truth.shape} and probabilities {scores.shape} must "
                            f"both be [examples, {len(names)}] for {len(names)} labels")
    if not len(truth):
        raise TransferError("there are no examples to evaluate")
    limits = np.full(len(names), 0.5) if thresholds is None else np.asarray(thresholds,
                                                                            np.float64)
    called = scores >= limits
    per_label, curves = _per_label(truth, scores, called, names, limits)
    present = [row for row in per_label.values() if row["support"]]
    tp = (called & truth).sum()
    micro = 2 * tp / max(called.sum() + truth.sum(), 1)
    return LabelReport(
        mean_average_precision=float(np.mean([r["average_precision"] for r in present]))
        if present else 0.0,
        micro_f1=float(micro),
        macro_f1=float(np.mean([r["f1"] for r in present])) if present else 0.0,
        subset_accuracy=float(np.mean((called == truth).all(axis=1))),
        per_label=per_label, thresholds=[float(t) for t in limits],
        top_losses=_top_losses(truth, scores, called, names, files, num_top_losses),
        class_names=names, num_examples=int(len(truth)),
        unlabelled=int((~truth.any(axis=1)).sum()), curves=curves)


def _per_label(truth, scores, called, names, limits):
    rows, curves = {}, {}
    for j, name in enumerate(names):
        predicted, support = int(called[:, j].sum()), int(truth[:, j].sum())
        row = {**scores_of_counts(int((called[:, j] & truth[:, j]).sum()), predicted,
                                  support),
               "average_precision": average_precision(truth[:, j], scores[:, j]),
               "threshold": float(limits[j])}
        notes = []
        if not support:
            notes.append("no positive example: left out of mAP and macro F1")
        if not predicted:
            notes.append("never predicted: precision set to 0")
        if notes:
            row["note"] = "; ".join(notes)
        rows[name] = row
        if support:
            curves[name] = precision_recall_curve(truth[:, j], scores[:, j])
    return rows, curves


def _top_losses(truth, scores, called, names, files, count):
    clipped = np.clip(scores, 1e-12, 1 - 1e-12)
    losses = -np.where(truth, np.log(clipped), np.log(1 - clipped)).sum(axis=1)
    wrong = np.flatnonzero((called != truth).any(axis=1))
    worst = wrong[np.argsort(-losses[wrong], kind="stable")][:count]
    return [{"index": int(i), "file": str(files[i]) if files is not None else None,
             "true": [names[j] for j in np.flatnonzero(truth[i])],
             "predicted": [names[j] for j in np.flatnonzero(called[i])],
             "loss": float(losses[i])} for i in worst]
