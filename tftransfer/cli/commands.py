"""The `tftransfer` commands other than `train` (which is `tftransfer.cli.train`).

Each takes the parsed arguments and returns an exit status.
"""

import importlib.util
import os
import sys
from pathlib import Path

from tftransfer.cli.arguments import class_names_option, data_options
from tftransfer.cli.inputs import (base_and_data, base_option, feature_cache_option,
                                   features_read_from_cache, labels_beside)
from tftransfer.data.labels_file import read_labels
from tftransfer.errors import TransferError


def export_command(args):
    """Runs `tftransfer export`; returns the exit status."""
    import tftransfer
    from tftransfer.defaults import TFLITE_QUANTIZATIONS
    from tftransfer.export.model_versions import check_export_target
    from tftransfer.export.tflite import export_tflite_variants
    from tftransfer.models.saving import load_model
    from tftransfer.reports.evaluation import renumbered

    path = Path(args.model)
    if not path.is_file() or path.suffix not in (".keras", ".h5", ".hdf5"):
        raise TransferError(f"--model must be a .keras file; {path} is not one")
    # Everything that could fail after the SavedModel is written is checked first.
    variants = (TFLITE_QUANTIZATIONS if args.tflite == "all"
                else tuple(v.strip() for v in args.tflite.split(",") if v.strip()))
    unknown = [v for v in variants if v not in TFLITE_QUANTIZATIONS]
    if unknown:
        raise TransferError(f"--tflite: unknown variant(s) {', '.join(unknown)}; choose "
                            f"'all' or from {', '.join(TFLITE_QUANTIZATIONS)}")
    if variants and not args.data:
        raise TransferError("--tflite needs --data with validation images, for the "
                            "accuracy report and int8 calibration")
    if args.onnx and importlib.util.find_spec("tf2onnx") is None:
        raise TransferError('--onnx needs tf2onnx: pip install "tftransfer[onnx]"')
    check_export_target(args.export, args.model_version, args.overwrite)
    model = load_model(path, safe_mode=not args.trust_model)
    data = None
    if args.data:
        data = tftransfer.load_data(args.data, model.input_shape[1:3],
                                    **data_options(args))
    class_names = _export_class_names(args, path, data)
    if class_names is None:
        raise TransferError("pass --data or --class-names so the export knows the "
                            "class names")
    version = tftransfer.export_saved_model(model, args.export, class_names,
                                            version=args.model_version,
                                            overwrite=args.overwrite,
                                            max_pixels=args.max_pixels,
                                            metadata={"source": str(path)})
    print(f"exported to {version}")
    if args.onnx:
        from tftransfer.export.onnx_export import export_onnx

        onnx_path = export_onnx(model, Path(args.export) / "onnx" / "model.onnx", class_names)
        print(f"ONNX: {onnx_path}")
    if not variants:
        return 0
    if data.validation is None:
        raise TransferError("--tflite needs --data with validation images, for the "
                            "accuracy report and int8 calibration")
    report = export_tflite_variants(model, Path(args.export) / "tflite",
                                    validation=renumbered(data.validation,
                                                          data.class_names, class_names),
                                    representative_data=data.train,
                                    class_names=class_names, quantizations=variants)
    print(f"{'variant':14s} {'size':>10s} {'val mAP' if data.multi_label else 'val accuracy':>13s}")
    for row in report:
        size = f"{row['bytes'] / 1024:.0f} KiB" if row["bytes"] else "-"
        print(f"{row['quantization']:14s} {size:>10s} {row['accuracy']:13.4f}  "
              f"{row['path'] or '(the Keras model)'}")
    return 0


def _export_class_names(args, path, data):
    """`--class-names`, else the names saved beside the model, checked against `--data`."""
    from tftransfer.reports.evaluation import labels_by_name

    if args.class_names:
        return class_names_option(args.class_names)
    saved = labels_beside(path)
    if saved.is_file():
        names = read_labels(saved)
        if data is not None:
            labels_by_name([], data.class_names, names)  # Fails on a class it does not know.
        return names
    return data.class_names if data else None


def predict_command(args):
    """Runs `tftransfer predict`; returns 0, or 3 when some images were skipped."""
    from tftransfer.export.predict import (image_paths, is_multi_label_export, iter_predictions,
                                           write_predictions)
    from tftransfer.progress import Progress

    rows = iter_predictions(args.model, args.images, top_k=args.top_k,
                            batch_size=args.batch_size)
    if args.predictions:
        progress = Progress(len(image_paths(args.images)[0]), "images")

        def counted():
            for row in rows:
                progress.add(1)
                yield row

        multi = is_multi_label_export(args.model)
        skipped = write_predictions(counted(), args.predictions, None if multi else args.top_k)
        print(f"predictions: {os.path.abspath(args.predictions)}")
    else:
        skipped = 0
        for path, ranked, reason in rows:
            if reason is not None:
                skipped += 1
                print(f"{path}: skipped: {reason}")
            else:
                print(f"{path}: " + (", ".join(f"{name} {score:.3f}" for name, score in ranked)
                                     or "no label over its threshold"))
    if skipped:
        where = (f"named in {args.predictions}, with their reasons" if args.predictions
                 else "named above")
        print(f"{skipped} image(s) could not be read and were skipped ({where})")
        return 3
    return 0


def bases_command(args):
    """Runs `tftransfer bases`; returns the exit status."""
    from tftransfer.models.bases import list_bases

    for spec in list_bases():
        taps = f" (taps {', '.join(spec.taps)})" if spec.taps else ""
        print(f"{spec.name:22s} {spec.input_size:>4d}px  {spec.preprocessing:6s} "
              f"{spec.description}{taps}")
    return 0


def check_data_command(args):
    """Runs `tftransfer check-data`; returns the exit status."""
    from tftransfer.data import check_data

    source = args.folder or args.data
    if source is None:
        raise TransferError("name the data: check-data DATA (or --data DATA)")
    if not Path(source).is_dir() or Path(source, "dataset_spec.pb").is_file():
        return _check_source(args, source)
    report = check_data(source)
    for path, reason in sorted(report.skipped.items()):
        print(f"skipped {path}: {reason}")
    for split, classes in report.used.items():
        counts = ", ".join(f"{name} {len(paths)}" for name, paths in classes.items())
        print(f"{split}: {counts}")
    print(report.summary())
    if report.problems:
        raise TransferError("; ".join(report.problems))
    return 0


def _check_source(args, source):
    """check-data on a source that is not a folder: read it as train would, then count."""
    import tftransfer

    options = {**data_options(args), "image_cache": False, "batch_size": 64}
    data = tftransfer.load_data(source, (32, 32), **options)  # Small: the check decodes all.
    for path, reason in sorted(data.skipped.items()):
        print(f"skipped {path}: {reason}")
    identities = data.identities()
    for split, identity in identities.items():
        print(f"{split}: " + ", ".join(f"{name} {int(n)}" for name, n in
                                       zip(data.class_names, identity.counts)))
    used = sum(identity.rows for identity in identities.values())
    print(f"{used + len(data.skipped)} example(s) found = {used} used + "
          f"{len(data.skipped)} skipped")
    return 0


def clear_cache_command(args):
    """Runs `tftransfer clear-cache`; returns the exit status."""
    from tftransfer.training.feature_cache import clear_feature_cache, default_cache_dir

    cache = feature_cache_option(args)
    if cache is False:
        raise TransferError("--feature-cache none names no cache to clear")
    cleared = clear_feature_cache(None if cache is True else cache)
    count = len(cleared.deleted)
    print(f"deleted {count} cache entr{'y' if count == 1 else 'ies'} from "
          f"{default_cache_dir() if cache is True else cache}")
    for path in cleared.in_use:
        print(f"kept {path}: a training is reading it", file=sys.stderr)
    for path, reason in cleared.failed.items():
        print(f"could not delete {path}: {reason}", file=sys.stderr)
    return 1 if cleared.in_use or cleared.failed else 0


def lr_find_command(args):
    """Runs `tftransfer lr-find`; returns the exit status."""
    import tensorflow as tf

    import tftransfer
    from tftransfer.models.builder import head_of
    from tftransfer.training.feature_cache import cached_features
    from tftransfer.models.losses import loss_and_metrics
    from tftransfer.training.lr_finder import find_learning_rate

    base, data = base_and_data(args, tf.distribute.get_strategy())
    model = tftransfer.build_classifier(base, len(data.class_names),
                                        multi_label=data.multi_label)
    # The range test trains on the features many times: they are extracted once.
    with features_read_from_cache(args) as cache_dir:
        features, _ = cached_features(model.get_layer("features"), data.train,
                                      cache_dir=cache_dir, shuffle=True, seed=args.seed)
        loss, _ = loss_and_metrics(data.multi_label)  # Sigmoids for multi-hot labels.
        search = find_learning_rate(head_of(model), features, loss=loss)
    print(f"learning rate: {search.rate:.3g} (a tenth of {search.lowest:.3g}, where the "
          f"loss was lowest); train with --head-learning-rate {search.rate:.3g} or auto")
    print(f"plot: {os.path.abspath(search.plot(args.plot))}")
    return 0


def evaluate_command(args):
    """Runs `tftransfer evaluate`; returns the exit status."""
    from tftransfer.reports.evaluation import evaluate

    report = evaluate(args.model, args.data, top_k=args.top_k,
                      safe_mode=not args.trust_model)
    rows = getattr(report, "per_class", None) or report.per_label
    ap = rows is not getattr(report, "per_class", None)  # A multi-label report.
    print(f"{'label' if ap else 'class':24s} {'AP' if ap else '':>6s} {'precision':>9s} "
          f"{'recall':>7s} {'F1':>6s} {'support':>8s}")
    for name, row in rows.items():
        print(f"{name[:24]:24s} {row['average_precision'] if ap else '':>6{'.3f' if ap else ''}} "
              f"{row['precision']:9.3f} {row['recall']:7.3f} "
              f"{row['f1']:6.3f} {row['support']:8d}  {row.get('note', '')}".rstrip())
    print(report.summary())
    page = report.save(args.output, title=f"{Path(args.model).name} on {args.data}")
    print(f"report: {os.path.abspath(page)}")
    if report.skipped:
        print(f"{len(report.skipped)} file(s) could not be used and were not scored "
              "(named above and in report.json)")
        return 3
    return 0


def compare_command(args):
    """Runs `tftransfer compare`; returns the exit status."""
    import tensorflow as tf

    from tftransfer.reports.comparison import compare

    base, data = base_and_data(args, tf.distribute.get_strategy())
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    comparison = compare(base, data, methods=methods, scratch_epochs=args.scratch_epochs,
                         seed=args.seed, feature_cache=feature_cache_option(args), verbose=0)
    print(comparison.table())
    print(f"report: {os.path.abspath(comparison.save(args.output))}")
    return 0


def audit_command(args):
    """Runs `tftransfer audit`; returns the exit status."""
    from tftransfer.reports.data_audit import audit, write_clean_list
    from tftransfer.reports.audit_page import save_audit

    base = base_option(args)
    with features_read_from_cache(args) as cache_dir:
        report = audit(args.folder, base, cache_dir=cache_dir,
                       near_duplicate=args.near_duplicate, batch_size=args.batch_size)
    print(report.table())
    print(report.summary())
    if report.label_check != "cleanlab":
        print(f"label errors: {report.label_check}")
    page = save_audit(report, args.output, title=f"Data audit of {args.folder}")
    print(f"audit: {os.path.abspath(page)}")
    if args.write_clean_list:
        print(f"clean list: {os.path.abspath(write_clean_list(report, args.write_clean_list))}")
    return 0
