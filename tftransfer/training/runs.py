"""Run records: what a training run was given, what it did and where it put things.

Every `tftransfer train` writes a run folder (`--run-dir`, by default
`runs/<date-time>-<data name>/`) holding:

* `config.json`: every option, the versions of Python, TensorFlow, Keras
  and tftransfer, a digest of the data and the seed, and, under
  `"outputs"`, where the model was exported and the report written;
* `history.csv`: one row per epoch of both phases;
* `decisions.json`: the plan that ran, the evidence measured on the cached
  features, and each decision made with it (whether the top phase ran,
  which weights were kept), with its reason;
* `logs/`: TensorBoard logs of both phases;
* `report/`: the evaluation report on the test split (or on the
  validation split when there is none).

`tftransfer train --config runs/X/config.json` runs the same training
again: the options are read from the file, and flags given on the command
line override them.
"""

import csv
import datetime
import hashlib
import itertools
import json
import os
import platform
import re
from pathlib import Path

from tftransfer.errors import TransferError

CONFIG_FILE = "config.json"
#: Options that say where this run's own files go, not how it trains.
NOT_REPLAYED = ("config", "run_dir", "command", "dry_run",
                # Outputs, and what loads code or weights from elsewhere: from the
                # command line or the defaults, never from a file that may be anyone's.
                "export", "overwrite", "model_version", "save_keras", "log_dir",
                "backup_dir", "feature_cache", "image_cache", "tfds_data_dir", "base",
                "weights", "taps", "trust_model", "replayed_digest")


def default_run_dir(data, now=None, root=None):
    """Returns `runs/<YYYYmmdd-HHMMSS>-<data name>` for a data argument.

    Args:
        data: The `--data` argument (a path, `tfds:NAME`, ...).
        now: The time to name the run by (default: now).
        root: The folder of runs (default: `$TFTRANSFER_RUNS_DIR`, else
            `runs` under the current folder).

    Returns:
        A `Path`.

    Example:
    >>> import datetime
    >>> str(default_run_dir("photos/flowers/", datetime.datetime(2026, 1, 2, 3, 4, 5),
    ...                     root="runs"))
    'runs/20260102-030405-flowers'
    """
    now = now or datetime.datetime.now()
    root = root or os.environ.get("TFTRANSFER_RUNS_DIR", "runs")
    name = Path(str(data).rstrip("/")).name or "data"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.split(":")[-1]).strip("-") or "data"
    return Path(root) / f"{now:%Y%m%d-%H%M%S}-{name}"


def claim_run_dir(path):
    """Creates a new run folder at `path`, or at `path-2`, `path-3`, ... if it is taken.

    Two runs started in the same second get folders of their own: `mkdir`
    fails for all but one of them.

    Args:
        path: The folder wanted, as `default_run_dir` names it.

    Returns:
        The `Path` created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for number in itertools.count(1):
        candidate = path if number == 1 else path.with_name(f"{path.name}-{number}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def versions():
    """Returns the versions of Python and the packages a run depends on."""
    import keras
    import numpy
    import tensorflow as tf

    from tftransfer import __version__

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": numpy.__version__,
            "tftransfer": __version__}


def data_digest(splits, known=None):
    """Returns a digest naming the content of a `DataSplits` (files, labels, sizes).

    Two runs on the same images, split alike, get the same digest; any
    changed, added, removed or relabelled image changes it (see
    `data.identify`, which reads each split once). `None` when a split
    cannot be read as `(images, labels)` pairs.

    Args:
        splits: The `DataSplits`.
        known: `{"train": DataIdentity, ...}` of splits already read (a
            `Plan`'s), which are not read again.
    """
    from tftransfer.data.identity import identify

    known = known or {}
    keys = []
    for name in ("train", "validation", "test"):
        dataset = getattr(splits, name)
        if dataset is None:
            continue
        key = (known.get(name) or identify(dataset)).key
        if key is None:
            return None
        keys.append(f"{name}={key}")
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


class RunRecord:
    """The run folder of one training run.

    Args:
        folder: The run folder; created if missing.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def config_path(self):
        return self.folder / CONFIG_FILE

    @property
    def log_dir(self):
        """Where TensorBoard logs go."""
        return self.folder / "logs"

    @property
    def report_dir(self):
        return self.folder / "report"

    def write_config(self, options, *, seed, digest):
        """Writes `config.json`: the options, versions, data digest and seed.

        Args:
            options: `{option: value}`, JSON-serialisable (e.g. `vars(args)`).
            seed: The run's seed.
            digest: `data_digest` of the data.
        """
        replayed = {k: v for k, v in sorted(options.items()) if k not in NOT_REPLAYED}
        config = {"options": replayed, "seed": seed, "data_digest": digest,
                  "versions": versions(), "outputs": {}}
        self.config_path.write_text(json.dumps(config, indent=1, default=str))

    def add_outputs(self, **outputs):
        """Records where things went (the export, the report) in `config.json`."""
        config = json.loads(self.config_path.read_text())
        config["outputs"].update({k: str(v) for k, v in outputs.items()})
        self.config_path.write_text(json.dumps(config, indent=1, default=str))

    def write_decisions(self, history):
        """Writes `decisions.json`: the plan, the evidence and the decisions of a run.

        Args:
            history: A `FineTuneHistory`.

        Returns:
            The path written.
        """
        record = {"plan": history.plan.to_dict() if history.plan else None,
                  "evidence": history.evidence.to_dict() if history.evidence else None,
                  "decisions": list(history.decisions), "kept_phase": history.kept_phase}
        path = self.folder / "decisions.json"
        path.write_text(json.dumps(record, indent=1, default=str))
        return path

    def write_history(self, history):
        """Writes `history.csv`: one row per epoch of both phases.

        Args:
            history: A `FineTuneHistory`.

        Returns:
            The path written.
        """
        rows = []
        for phase, phase_history in (("head", history.head), ("top", history.top)):
            if phase_history is None:
                continue
            for i, epoch in enumerate(phase_history.epoch):
                row = {"phase": phase, "epoch": epoch + 1}
                row.update({k: float(v[i]) for k, v in phase_history.history.items()
                            if i < len(v)})
                rows.append(row)
        columns = ["phase", "epoch"] + sorted({k for r in rows for k in r} - {"phase", "epoch"})
        path = self.folder / "history.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        return path


def load_config(path):
    """Reads the training options of a run's `config.json`, to run it again.

    Only training settings are replayed: outputs (`export`, `run_dir`,
    `backup_dir`, ...) and what loads code or weights (`base`, `weights`,
    the caches) are left out (`NOT_REPLAYED`), so a config from someone
    else cannot overwrite a served version or load a module.

    Args:
        path: A `config.json`, or the run folder holding it.

    Returns:
        `(options, config)`: `{option: value}` to replay, and the whole file
        (its `data_digest`, its `options` as written).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
        options = {k: v for k, v in dict(config["options"]).items() if k not in NOT_REPLAYED}
        return options, config
    except FileNotFoundError:
        raise TransferError(f"--config {path}: no such file") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise TransferError(f"--config {path} is not a run's config.json ({error})") from None
