"""Training: a classifier and its data in, a trained classifier and its history out.

* `plan`: everything `fine_tune` resolves before it trains (`plan_fine_tune`);
* `auto`: what the `"auto"` settings resolve to, from the data;
* `evidence`: how well the frozen features already separate the classes;
* `phases`: the head and top phases (`Phase`);
* `fine_tuning`, `history`: `fine_tune`, which runs a plan, and what it returns;
* `keep`: which phase's weights are kept;
* `feature_cache`, `cached_inputs`: the base's outputs, computed once;
* `backups`: resuming a run after a crash or preemption;
* `distribute`, `multi_worker`: devices, machines and mixed precision;
* `lr_finder`: the head's learning-rate range test;
* `runs`: the record of a run (its config, decisions and results).
"""

from tftransfer._lazy import lazy_names as _lazy_names

_PUBLIC = {
    "FineTuneHistory": "tftransfer.training.history",
    "Phase": "tftransfer.training.phases",
    "Plan": "tftransfer.training.plan",
    "RunOptions": "tftransfer.training.plan",
    "clear_feature_cache": "tftransfer.training.feature_cache",
    "fine_tune": "tftransfer.training.fine_tuning",
    "plan_fine_tune": "tftransfer.training.plan",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = _lazy_names(globals(), _PUBLIC)
