"""What `fine_tune` returns: each phase's Keras `History`, and what the run decided."""

import dataclasses
from typing import Optional

import keras

from tftransfer.training.evidence import Evidence
from tftransfer.training.lr_finder import RateSearch
from tftransfer.training.plan import Plan


@dataclasses.dataclass
class FineTuneHistory:
    """The Keras `History` of each phase, and the plan they ran.

    Attributes:
        head: The head phase's (phase 1: the head alone).
        top: The top phase's (phase 2: the unfrozen top), or `None` if it
            did not run.
        kept_phase: Whose weights the model has: `"head"`, `"top"`, or
            `"average"` (of both phases' weights), as `plan.keep` says
            (`keep.choose_kept`).
        head_cache: The manifest of the cached training features used by
            the head phase (see `cached_features`), or `None`.
        top_cache: The manifest of the cached activations at the unfreeze
            boundary used by the top phase, or `None`.
        head_learning_rate: The head phase's learning rate (the one picked,
            with `"auto"`).
        rate_search: With a head rate of `"auto"`, the range test's
            `lr_finder.RateSearch`.
        unfrozen: The backbone layers (or a hub module's variables) that
            the top phase trained; 0 if it did not run.
        refit: With `refit`, the `History` of the head's second training,
            on the training and validation data together (no validation
            metrics; not part of `history`), else `None`.
        plan: The `Plan` that ran.
        thresholds: For a multi-label model with validation data, the
            per-label thresholds chosen on it (`multi_label.choose_thresholds`)
            and set in the model; else `None`.
        evidence: The `evidence.Evidence` measured on the cached features
            before the head phase, when a decision waited for it; else `None`.
        decisions: The decisions made during the run, each a line with its
            reason (whether the top phase ran, which weights were kept).
    """

    head: keras.callbacks.History
    top: Optional[keras.callbacks.History] = None
    kept_phase: str = "head"
    head_cache: Optional[dict] = None
    top_cache: Optional[dict] = None
    head_learning_rate: Optional[float] = None
    rate_search: Optional[RateSearch] = None
    unfrozen: int = 0
    refit: Optional[keras.callbacks.History] = None
    plan: Optional[Plan] = None
    thresholds: Optional[list] = None
    evidence: Optional[Evidence] = None
    decisions: list = dataclasses.field(default_factory=list)

    @property
    def history(self) -> dict:
        """Both phases' logs joined epoch by epoch, as in `History.history`."""
        phases = [h for h in (self.head, self.top) if h is not None]
        keys = {k for h in phases for k in h.history}
        return {k: [v for h in phases for v in h.history.get(k, [])] for k in keys}

    @property
    def head_epochs(self) -> int:
        """The number of epochs the head phase ran (counting those before a resume)."""
        return self.head.epoch[-1] + 1 if self.head.epoch else 0
