"""Transfer learning compared with training from scratch, on the same test images.

The classic transfer-learning experiment, for your own data: one seeded
split, three classifiers, scored on the same held-out images.

* `scratch`: the base's architecture with fresh random weights, every
  layer trained (BatchNorm included), the same head;
* `features`: the pretrained base frozen, only the new head trained
  (feature extraction, the head phase of `fine_tune`);
* `fine_tune`: both phases of `fine_tune` with its defaults.

Multi-label data (see `data.multi_hot`) gives multi-label classifiers,
scored by mean average precision instead of accuracy.
"""

import dataclasses
import time
from pathlib import Path
from typing import Sequence, Union

import keras

from tftransfer.data.loader import DataSplits
from tftransfer.errors import TransferError
from tftransfer.models.builder import build_classifier, set_trainable_flag
from tftransfer.models.features import Base
from tftransfer.models.losses import loss_and_metrics
from tftransfer.reports.evaluation import evaluate
from tftransfer.training.fine_tuning import fine_tune, tune_thresholds
from tftransfer.training.phases import Phase
from tftransfer.training.plan import RunOptions

METHODS = ("scratch", "features", "fine_tune")


@dataclasses.dataclass
class MethodResult:
    """One classifier of a comparison.

    Attributes:
        method: `"scratch"`, `"features"` or `"fine_tune"`.
        report: Its `evaluation.Report` on the test images.
        seconds: Wall time of its training.
    """

    method: str
    report: object
    seconds: float

    @property
    def score(self) -> float:
        """Accuracy, or for a multi-label report its mean average precision."""
        if hasattr(self.report, "accuracy"):
            return self.report.accuracy
        return self.report.mean_average_precision

    @property
    def macro_f1(self) -> float:
        """The macro-averaged F1 of its classes or labels."""
        per_class = getattr(self.report, "per_class", None)
        return per_class["macro avg"]["f1"] if per_class else self.report.macro_f1


@dataclasses.dataclass
class Comparison:
    """The result of `compare`: one `MethodResult` per method, in order."""

    results: list
    split: str

    @property
    def metric(self) -> str:
        """What `MethodResult.score` is: `"accuracy"` or `"mAP"`."""
        return "accuracy" if hasattr(self.results[0].report, "accuracy") else "mAP"

    def table(self):
        """The results as a text table: accuracy (or mAP), macro F1, wall time."""
        lines = [f"{'method':12s} {self.metric:>9s} {'macro F1':>9s} {'seconds':>8s}"]
        for r in self.results:
            lines.append(f"{r.method:12s} {r.score:9.4f} {r.macro_f1:9.4f} {r.seconds:8.1f}")
        return "\n".join(lines)

    def save(self, folder):
        """Writes `compare.html` (a bar chart, the confusion matrices) and `compare.json`.

        Args:
            folder: The output folder; created if missing.

        Returns:
            The path of `compare.html`.
        """
        from tftransfer.reports.report_page import write_comparison_page

        return write_comparison_page(self, folder)


def compare(base: Base, data: DataSplits, *, methods: Sequence[str] = METHODS,
            scratch_epochs: int = 30, seed: int = 0,
            feature_cache: Union[bool, str, Path] = True,
            verbose: Union[int, str] = 0) -> "Comparison":
    """Trains from scratch, by feature extraction and by fine-tuning; scores each.

    Args:
        base: A pretrained `Base` from `load_base`. Fine-tuning changes its
            top layers' weights, so it runs last.
        data: `DataSplits`, e.g. from `load_data`; the test split is scored
            (the validation split when there is none, which then also
            stops training early).
        methods: Which of `METHODS` to run.
        scratch_epochs: The most epochs from scratch (early stopping on
            the validation loss usually ends it sooner).
        seed: Seeds each method's initialisation and shuffling.
        feature_cache: As in `RunOptions`.
        verbose: As in `fine_tune`.

    Returns:
        A `Comparison`.
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise TransferError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    split, scored = data.held_out()
    if scored is None:
        raise TransferError("compare needs a test or validation split to score on")
    results = []
    for method in sorted(methods, key=METHODS.index):
        keras.utils.set_random_seed(seed)
        start = time.perf_counter()
        model = build_classifier(base, len(data.class_names), multi_label=data.multi_label)
        if method == "scratch":
            model = _train_from_scratch(model, data, scratch_epochs, verbose)
            if data.multi_label and data.validation is not None:
                tune_thresholds(model, data.validation)
        else:
            fine_tune(model, data.train, data.validation,
                      top=Phase.top(**({"epochs": 0} if method == "features" else {})),
                      verbose=verbose,
                      options=RunOptions(feature_cache=feature_cache, seed=seed),
                      # Refitting on the split that is scored would flatter it.
                      refit="auto" if split == "test" else False)
        seconds = time.perf_counter() - start
        results.append(MethodResult(method, evaluate(model, scored, data.class_names),
                                    seconds))
    return Comparison(results, split)


def _train_from_scratch(pretrained, data, epochs, verbose):
    """The same architecture, freshly initialised and fully trained."""
    try:
        model = keras.models.clone_model(pretrained)  # New weights, same layers.
    except Exception as error:  # A TF Hub module cannot be re-initialised.
        raise TransferError(f"the base cannot be trained from scratch ({error}); leave "
                            "out the scratch method") from None
    set_trainable_flag(model, True)  # BatchNorm too: there are no statistics to keep.
    loss, metrics = loss_and_metrics(data.multi_label)
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=metrics)
    monitor = "val_loss" if data.validation is not None else "loss"
    model.fit(data.train, validation_data=data.validation, epochs=epochs,
              verbose=0 if verbose == 0 else 2,
              callbacks=[keras.callbacks.EarlyStopping(monitor, patience=5,
                                                       restore_best_weights=True)])
    return model
