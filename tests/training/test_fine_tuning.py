
import keras
import numpy as np
import pytest

import tftransfer
from tftransfer.models.builder import backbone_layers, head_of


class RecordWeights(keras.callbacks.Callback):
    """Keeps a copy of every layer's weights of a classifier after each fit.

    It holds the classifier itself: while phase 1 runs on cached features,
    `self.model` is only the head.
    """

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier
        self.snapshots = []

    def on_train_end(self, logs=None):
        self.snapshots.append(snapshot(self.classifier))


def snapshot(model):
    layers = {layer.name: [w.numpy().copy() for w in layer.weights]
              for layer in backbone_layers(model)}
    layers["head"] = [w.numpy().copy() for w in head_of(model).weights]
    return layers


def changed(before, after, name):
    return any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))


@pytest.fixture
def datasets(image_folder_path):
    data = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=8)
    return data.train, data.validation


def test_phase_one_changes_only_the_head_and_phase_two_only_the_top(tiny_base, datasets):
    train, validation = datasets
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    initial = snapshot(model)
    recorder = RecordWeights(model)
    history = tftransfer.fine_tune(
        model, train, None, head=tftransfer.Phase.head(epochs=2),
        top=tftransfer.Phase.top(epochs=2, learning_rate=1e-2, unfreeze=3,
                                             warmup_epochs=0),
        callbacks=[recorder], verbose=0)
    assert history.head_epochs == 2 and len(history.top.epoch) == 2
    assert history.top.epoch == [2, 3]  # phase 2 goes on counting epochs
    after_head, after_top = recorder.snapshots

    assert changed(initial, after_head, "head")
    for name in ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]:
        assert not changed(initial, after_head, name), name

    # unfreeze=3: conv3, bn3, relu3; BatchNorm stays frozen, statistics included.
    assert changed(after_head, after_top, "conv3")
    assert changed(after_head, after_top, "head")
    for name in ["conv1", "bn1", "conv2", "bn2", "bn3"]:
        assert not changed(after_head, after_top, name), name


def test_history_joins_both_phases(tiny_base, datasets):
    train, validation = datasets
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    history = tftransfer.fine_tune(
        model, train, validation, head=tftransfer.Phase.head(epochs=2),
        top=tftransfer.Phase.top(epochs=1, unfreeze="all"), verbose=0)
    assert len(history.history["val_loss"]) == history.head_epochs + 1


def test_phase_two_runs_every_epoch_and_the_model_keeps_the_chosen_weights(tiny_base,
                                                                          datasets):
    train, validation = datasets
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    recorder = RecordWeights(model)
    history = tftransfer.fine_tune(
        model, train, validation, head=tftransfer.Phase.head(epochs=4, patience=1),
        top=tftransfer.Phase.top(epochs=3, unfreeze="all"),
        callbacks=[recorder], verbose=0)
    assert tftransfer.Phase.top().patience is None
    assert len(history.top.epoch) == 3  # No early stopping.
    after_head, after_top = recorder.snapshots[0], recorder.snapshots[-1]
    expected = {"head": after_head, "top": after_top,
                "average": {name: [(a + b) / 2 if np.issubdtype(b.dtype, np.floating) else b
                                   for a, b in zip(after_head[name], after_top[name])]
                            for name in after_top}}[history.kept_phase]
    final = snapshot(model)
    for name in final:
        for want, got in zip(expected[name], final[name]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert history.decisions[-1].startswith(f"kept the {history.kept_phase}")


def test_early_stopping_in_phase_two_only_with_a_patience(tiny_base, datasets, monkeypatch):
    from tftransfer.training import fine_tuning as training

    stoppers = []

    def fit(*args, callbacks, **kwargs):
        stoppers.append([c.patience for c in callbacks
                         if isinstance(c, keras.callbacks.EarlyStopping)])
        return real_fit(*args, callbacks=callbacks, **kwargs)

    real_fit = training.fit
    monkeypatch.setattr(training, "fit", fit)
    train, validation = datasets
    for patience in (None, 1):
        model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
        tftransfer.fine_tune(model, train, validation, head=tftransfer.Phase.head(epochs=1),
                             top=tftransfer.Phase.top(epochs=1, unfreeze="all",
                                                                  patience=patience),
                             verbose=0)
    assert stoppers == [[5], [], [5], [1]]  # Phase 1, phase 2; twice.


def test_phase_two_is_skipped_without_unfrozen_layers(tiny_base, datasets):
    train, validation = datasets
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    history = tftransfer.fine_tune(
        model, train, validation, head=tftransfer.Phase.head(epochs=1),
        top=tftransfer.Phase.top(unfreeze="none"), verbose=0)
    assert history.top is None and history.kept_phase == "head"


def test_restores_the_best_weights_of_phase_one_when_phase_two_is_worse(tiny_base, datasets):
    train, validation = datasets
    # Seeded: on 6 validation images, a head phase that happened to stop at 50%
    # could not be told apart from a ruined top phase's 33% (one standard error).
    keras.utils.set_random_seed(0)
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    recorder = RecordWeights(model)
    # A huge phase-2 learning rate ruins the top layers.
    history = tftransfer.fine_tune(
        model, train, validation, head=tftransfer.Phase.head(epochs=10, learning_rate=0.05),
        top=tftransfer.Phase.top(epochs=2, learning_rate=50.0, unfreeze="all",
                                             warmup_epochs=0),
        callbacks=[recorder], verbose=0)
    assert history.kept_phase == "head"
    final = snapshot(model)
    assert not changed(recorder.snapshots[0], final, "conv1")


def test_invalid_unfreeze_fails_before_training(tiny_base, datasets):
    train, validation = datasets
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    before = snapshot(model)
    with pytest.raises(tftransfer.TransferError, match="cannot unfreeze 99 layers"):
        tftransfer.fine_tune(
            model, train, validation, top=tftransfer.Phase.top(unfreeze=99),
            verbose=0)
    assert not changed(before, snapshot(model), "head")


def test_auto_class_weight_balances_imbalanced_data(tiny_base, tmp_path, caplog):
    import logging
    import shutil

    from conftest import write_image_folder
    from tftransfer.training.auto import balanced_class_weight

    root = write_image_folder(tmp_path / "data", 6)
    for path in sorted((root / "red").iterdir())[2:]:
        path.unlink()  # red: 2 images; blue, green: 6 each.
    data = tftransfer.image_folder(root, (32, 32), validation_split=0)
    weights = balanced_class_weight(data.train, 3)
    assert weights == pytest.approx({0: 14 / 18, 1: 14 / 18, 2: 14 / 6})
    balanced = tftransfer.image_folder(write_image_folder(tmp_path / "even", 2), (32, 32),
                                       validation_split=0)
    assert balanced_class_weight(balanced.train, 3) is None
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    with caplog.at_level(logging.INFO, logger="tftransfer"):
        tftransfer.fine_tune(
            model, data.train, head=tftransfer.Phase.head(epochs=1),
            top=tftransfer.Phase.top(epochs=0), verbose=0)
    assert "class weights for imbalanced data (counts [6, 6, 2])" in caplog.text
    shutil.rmtree(root)


def test_log_dir_gets_tensorboard_logs_of_both_phases(tiny_base, datasets, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, validation = datasets
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    tftransfer.fine_tune(
        model, train, validation, head=tftransfer.Phase.head(epochs=2),
        top=tftransfer.Phase.top(epochs=1, unfreeze=3),
        callbacks=[keras.callbacks.TensorBoard(str(tmp_path))], verbose=0)
    epochs = []
    for events in (tmp_path / "validation").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events)).Reload()
        if "epoch_loss" in accumulator.Tags()["tensors"]:
            epochs += [event.step for event in accumulator.Tensors("epoch_loss")]
    assert sorted(epochs) == [0, 1, 2]  # Phase 1's epochs 0-1, then phase 2's epoch 2.


def test_auto_unfreeze_skips_phase_two_on_few_images_and_trains_the_top_on_more(
        tiny_base, datasets, monkeypatch):
    train, validation = datasets  # 6 or 7 training images per class.
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    run = lambda: tftransfer.fine_tune(  # noqa: E731
        model, train, validation, head=tftransfer.Phase.head(epochs=1),
        top=tftransfer.Phase.top(epochs=1), verbose=0)
    history = run()
    assert history.top is None and history.unfrozen == 0
    monkeypatch.setattr("tftransfer.training.auto.AUTO_UNFREEZE", ((5, 0.0), (1e9, 0.5)))
    # Whatever the evidence.
    monkeypatch.setattr("tftransfer.training.auto.TOP_PHASE_HEADROOM", 0.0)
    history = run()
    assert history.unfrozen == round(0.5 * len(backbone_layers(model))) > 0
    assert history.top is not None


def _rows(dataset):
    return sum(int(y.shape[0]) for _, y in dataset)


@pytest.mark.parametrize("feature_cache", [True, False])
def test_refit_trains_the_head_again_on_train_and_validation_for_the_best_epochs(
        tiny_base, image_folder_path, tmp_path, feature_cache):
    data = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=4)
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    history = tftransfer.fine_tune(
        model, data.train, data.validation, head=tftransfer.Phase.head(epochs=4),
        top=tftransfer.Phase.top(epochs=0),
        options=tftransfer.RunOptions(feature_cache=feature_cache and tmp_path, seed=0),
        verbose=0)
    assert history.refit is not None  # "auto": 8 images per class, phase 2 skipped.
    best = int(np.argmin(history.head.history["val_loss"])) + 1
    assert len(history.refit.epoch) == best
    assert "val_loss" not in history.refit.history
    train, validation = _rows(data.train), _rows(data.validation)
    # Cached rows are batched together; uncached, validation's batches follow train's.
    joined = (-(-(train + validation) // 4) if feature_cache
              else -(-train // 4) + -(-validation // 4))
    assert history.refit.params["steps"] == joined > -(-train // 4)


def test_refit_weighs_each_validation_image_as_a_training_image_of_k_views(
        tiny_base, image_folder_path, tmp_path):
    data = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=4)
    model = tftransfer.build_classifier(tiny_base, 3)  # With augmentation.
    history = tftransfer.fine_tune(
        model, data.train, data.validation, head=tftransfer.Phase.head(epochs=2),
        top=tftransfer.Phase.top(epochs=0), augmented_views=3, refit=True,
        options=tftransfer.RunOptions(feature_cache=tmp_path, seed=0), verbose=0)
    rows = 3 * (_rows(data.train) + _rows(data.validation))
    assert history.head_cache["rows"] == 3 * _rows(data.train)
    assert history.refit.params["steps"] == -(-rows // 4)


def test_refit_off_without_validation_and_on_larger_data(tiny_base, datasets, tmp_path,
                                                         monkeypatch):
    train, validation = datasets
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    run = lambda validation, **options: tftransfer.fine_tune(  # noqa: E731
        model, train, validation, head=tftransfer.Phase.head(epochs=1),
        top=tftransfer.Phase.top(epochs=0),
        options=tftransfer.RunOptions(feature_cache=tmp_path), verbose=0, **options)
    assert run(validation, refit=False).refit is None
    assert run(None).refit is None
    monkeypatch.setattr("tftransfer.training.auto.REFIT_BELOW", 5)
    assert run(validation).refit is None
    assert run(validation, refit=True).refit is not None


def test_refit_fails_when_phase_two_would_run(tiny_base, datasets):
    train, validation = datasets
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    with pytest.raises(tftransfer.TransferError, match="refit"):
        tftransfer.fine_tune(model, train, validation,
                             top=tftransfer.Phase.top(unfreeze=2), refit=True,
                             verbose=0)


def test_cached_phases_run_several_steps_per_call(tiny_base, datasets, tmp_path):
    train, validation = datasets
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    tftransfer.fine_tune(model, train, validation, head=tftransfer.Phase.head(epochs=1),
                         top=tftransfer.Phase.top(epochs=0), refit=False,
                         options=tftransfer.RunOptions(feature_cache=tmp_path), verbose=0)
    steps = -(-_rows(train) // 8)
    assert head_of(model).steps_per_execution == min(
        tftransfer.training.fine_tuning.CACHED_STEPS_PER_EXECUTION["head"], steps) > 1
    assert model.steps_per_execution == 1  # Compiled for `evaluate` as usual.


def test_multi_label_fine_tune_chooses_thresholds_on_validation(tiny_base, multi_label_csv):
    from tftransfer.models.multi_label import positive_weights, thresholds_of

    path, _ = multi_label_csv
    keras.utils.set_random_seed(0)
    data = tftransfer.load_data(path, (32, 32), batch_size=8)
    model = tftransfer.build_classifier(tiny_base, 3, multi_label=True)
    history = tftransfer.fine_tune(model, data.train, data.validation,
                                   top=tftransfer.Phase.top(epochs=2, unfreeze=2), verbose=0)
    plan = history.plan
    assert plan.multi_label and plan.refit is False and "average precision" in plan.keep
    assert plan.class_weight == positive_weights(plan.train.counts, plan.train.rows)
    assert "val_average_precision" in history.head.history
    assert history.top is not None and history.head_cache and history.top_cache
    np.testing.assert_allclose(thresholds_of(model), history.thresholds)
    assert not np.allclose(history.thresholds, 0.5)


def test_labels_that_do_not_fit_the_head_are_refused(tiny_base, multi_label_csv, datasets):
    path, _ = multi_label_csv
    data = tftransfer.load_data(path, (32, 32), batch_size=8)
    with pytest.raises(tftransfer.TransferError, match="multi_label=True"):
        tftransfer.plan_fine_tune(tftransfer.build_classifier(tiny_base, 3), data.train)
    with pytest.raises(tftransfer.TransferError, match="one label per image"):
        tftransfer.plan_fine_tune(tftransfer.build_classifier(tiny_base, 3, multi_label=True),
                                  datasets[0])


def _noise_folder(root, per_class=12, seed=0):
    """Three classes of the same noise: no frozen feature can tell them apart."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (32, 32, 3)).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("separable", [True, False])
def test_the_evidence_of_the_cached_features_decides_whether_the_top_phase_runs(
        tiny_base, image_folder_path, tmp_path, separable, caplog, monkeypatch):
    # A top phase from 5 images per class, so that the tiny sets' "auto" plans one.
    monkeypatch.setattr("tftransfer.training.auto.AUTO_UNFREEZE", ((5, 0.0), (1e9, 0.5)))
    folder = image_folder_path if separable else _noise_folder(tmp_path / "noise")
    data = tftransfer.image_folder(folder, (32, 32), batch_size=8, seed=0)
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    with caplog.at_level("INFO", logger="tftransfer"):
        history = tftransfer.fine_tune(
            model, data.train, data.validation, head=tftransfer.Phase.head(epochs=2),
            top=tftransfer.Phase.top(epochs=1), verbose=0,
            options=tftransfer.RunOptions(feature_cache=tmp_path / "cache", seed=0))
    evidence = history.evidence
    assert evidence.rows == _rows(data.train) + _rows(data.validation)
    decision = history.decisions[0]
    assert f"out-of-fold accuracy {evidence.oof_accuracy:.3f}" in decision
    assert decision in caplog.text and "evidence: out-of-fold accuracy" in caplog.text
    if separable:  # Colours: the frozen features already get every image right.
        assert evidence.oof_accuracy >= 0.96
        assert decision.startswith("top phase: skipped") and history.top is None
        assert not history.plan.top.runs and history.plan.refit  # 8 per class: refit.
        assert history.refit is not None
    else:
        assert evidence.oof_accuracy < 0.6
        assert decision.startswith("top phase: runs") and history.top is not None
        assert history.unfrozen > 0
