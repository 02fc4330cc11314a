import logging

import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tftransfer.data import identify
from tftransfer.models.builder import set_trainable
from tftransfer.training import plan as plan_module
from tftransfer.training.plan import boundary_split, plan_fine_tune, why_not_cached


def unshuffled(count=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (count, size, size, 3)).astype("float32")
    labels = np.arange(count) % 3
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)


def test_why_not_cached_names_the_reason(tiny_base):
    model = tftransfer.build_classifier(tiny_base, 3)  # With augmentation.
    known = identify(unshuffled(), 3)
    assert why_not_cached(model, known, False, None) == "disabled"
    assert "tf.data.Dataset" in why_not_cached(model, identify([(1, 2)]), True, None)
    assert "repeats forever" in why_not_cached(model, identify(unshuffled().repeat()), True,
                                               None)
    assert "augmented_views" in why_not_cached(model, known, True, 0)
    assert why_not_cached(model, known, True, 4) is None


def test_boundary_split_runs_uncached_when_the_disk_is_short(tiny_base, tmp_path, caplog,
                                                             monkeypatch):
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    unfrozen = set_trainable(model, 3)
    known = identify(unshuffled(), 3)
    split, why_not = boundary_split(model, known, unfrozen, tmp_path, None)
    assert split is not None and why_not is None
    monkeypatch.setattr(plan_module, "free_space", lambda folder: 100)
    with caplog.at_level(logging.WARNING, logger="tftransfer"):
        split, why_not = boundary_split(model, known, unfrozen, tmp_path, None)
    assert split is None and why_not == "not enough disk space"
    assert "would not fit" in caplog.text


def test_a_cut_that_fails_falls_back_to_an_uncached_top_phase(tiny_base, tmp_path,
                                                              monkeypatch):
    def broken(model, unfrozen):
        raise AttributeError("a Keras internal moved")

    monkeypatch.setattr(plan_module, "split_at", broken)
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    plan = plan_fine_tune(model, unshuffled(), top=tftransfer.Phase.top(unfreeze=3),
                          refit=False, options=tftransfer.RunOptions(feature_cache=tmp_path))
    assert plan.head.cached and not plan.top.cached
    assert "cannot be cut" in plan.top.why_not_cached
    assert "a Keras internal moved" in plan.describe()


def test_plan_of_a_cached_run_says_what_auto_chose(tiny_base, split_folder_path, tmp_path):
    data = tftransfer.image_folder(split_folder_path, (32, 32), batch_size=4)
    model = tftransfer.build_classifier(tiny_base, 3)  # With augmentation.
    plan = plan_fine_tune(model, data.train, data.validation,
                          top=tftransfer.Phase.top(unfreeze=3),
                          options=tftransfer.RunOptions(feature_cache=tmp_path))
    facts = plan.to_dict()
    assert facts["train"]["rows"] == 18 and facts["train"]["counts"] == (6, 6, 6)
    assert facts["validation"]["rows"] == 9
    assert facts["head"]["cached"] and facts["top"]["cached"] and facts["crossing"] == 1
    assert facts["top"]["unfreeze"] == 3 and facts["top"]["epochs"] == 20
    assert facts["views"] == 8  # 6 images per class: augmented, 48 rows at most 8 views.
    assert facts["refit"] is False  # The top phase runs.
    assert facts["class_weight"] is None  # Balanced.
    assert facts["cache_dir"] == str(tmp_path)
    text = plan.describe()
    assert "18 training images, per class [6, 6, 6]; 9 validation images" in text
    assert "top: the top 3 backbone layer(s) and the head" in text
    assert "cached (1 tensor(s) cross the cut)" in text
    assert "augmented views: 8" in text


def test_plan_leaves_the_model_untouched(tiny_base):
    # Built with part of its base trainable: planning does not reset the flags.
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None, unfreeze="all")
    before = [w.trainable for w in model.weights]
    assert any(before[:-2])
    plan_fine_tune(model, unshuffled(), top=tftransfer.Phase.top(unfreeze=3), refit=False)
    assert [w.trainable for w in model.weights] == before
    assert getattr(model, "optimizer", None) is None  # Not compiled.


def test_plan_of_a_hub_module_says_why_its_top_phase_is_uncached(hub_bn_module, image_folder_path,
                                                                 tmp_path):
    base = tftransfer.load_base(str(hub_bn_module))
    data = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=8)
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    plan = plan_fine_tune(model, data.train, data.validation,
                          top=tftransfer.Phase.top(unfreeze="all"),
                          options=tftransfer.RunOptions(feature_cache=tmp_path))
    assert plan.head.cached and plan.top.runs and not plan.top.cached
    assert plan.top.phase.unfreeze == 2  # The module's fine-tunable variables.
    assert "TF Hub module runs only as a whole" in plan.top.why_not_cached
    text = plan.describe()
    assert "the top 2 variable(s) of the TF Hub module and the head" in text
    assert "uncached (a TF Hub module runs only as a whole" in text


def test_plan_without_the_cache_or_a_top_phase(tiny_base):
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    plan = plan_fine_tune(model, unshuffled(), unshuffled(6, seed=1),
                          top=tftransfer.Phase.top(epochs=0), refit=True,
                          options=tftransfer.RunOptions(feature_cache=False, seed=5))
    assert not plan.head.cached and plan.head.why_not_cached == "disabled"
    assert not plan.top.runs and plan.refit and plan.seed == 5
    assert plan.options.feature_cache is False  # Whole: run_plan reads only the plan.
    # "auto" needs cached features for its range test: resolved here, not at run time.
    assert plan.head.phase.learning_rate == plan_module.FALLBACK_HEAD_RATE
    assert f"{plan_module.FALLBACK_HEAD_RATE:g}" in plan.describe()
    assert plan.cache_dir is None and plan.split is None
    assert "top: skipped" in plan.describe() and "feature cache: disabled" in plan.describe()


def test_data_that_cannot_be_read_through_is_a_clear_error(tiny_base):
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    with pytest.raises(tftransfer.TransferError, match="repeats forever"):
        plan_fine_tune(model, unshuffled().repeat())
