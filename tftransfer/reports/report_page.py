"""`report.html`: one self-contained page of what a classifier learned.

The page opens in a browser with no server: its plots and thumbnails are
inline (data URIs), and each plot is also kept as a PNG beside the page.
It shows the confusion matrix as a heat map, the per-class table, the top
losses as thumbnails with captions, a reliability diagram and, after
training, both phases' loss and accuracy curves with the boundary marked.
"""

import html
from pathlib import Path

import numpy as np

from tftransfer.reports.page import (data_uri, figure, save_figure, thumbnail_uri,
                                     write_html)

#: The most classes a confusion matrix figure shows; with more, it shows
#: those with the most errors (a figure of 1,000 classes would need
#: gigabytes and show nothing readable). The per-class table keeps them all.
MATRIX_CLASSES = 40


def most_confused(matrix, count=MATRIX_CLASSES):
    """The indices of the `count` classes with the most errors, as true or predicted class.

    Example:
    >>> most_confused(np.array([[5, 0, 0], [0, 3, 4], [1, 0, 2]]), 2).tolist()
    [1, 2]
    """
    matrix = np.asarray(matrix)
    errors = matrix.sum(axis=0) + matrix.sum(axis=1) - 2 * np.diag(matrix)
    return np.sort(np.argsort(-errors, kind="stable")[:count])


def plot_confusion_matrix(matrix, class_names, path, title="Confusion matrix"):
    """Saves a confusion matrix as a heat map (rows: true class) to a PNG.

    With more than `MATRIX_CLASSES` classes, only the most confused ones
    are shown (`most_confused`), and the title says so.

    Args:
        matrix: Counts, `[classes, classes]`.
        class_names: The class names.
        path: The PNG's path.
        title: The plot's title.

    Returns:
        `path`.
    """
    matrix = np.asarray(matrix)
    # Row-normalised colours, so that small classes show their errors too.
    rows = matrix.sum(axis=1, keepdims=True)
    if len(class_names) > MATRIX_CLASSES:
        shown = most_confused(matrix)
        title = f"{title}: the {len(shown)} most confused of {len(class_names)} classes"
        matrix, rows = matrix[np.ix_(shown, shown)], rows[shown]
        class_names = [class_names[i] for i in shown]
    size = max(4.0, 0.35 * len(class_names) + 2.5)
    fig, ax = figure(size + 1, size)
    image = ax.imshow(matrix / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, class_names, fontsize=7)
    if len(class_names) <= 25:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                        color="white" if count > 0.5 * max(rows[i, 0], 1) else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    return save_figure(fig, path)


def plot_reliability(reliability, path):
    """Saves a reliability diagram (accuracy against confidence per bin) to a PNG.

    Args:
        reliability: `Report.reliability`.
        path: The PNG's path.

    Returns:
        `path`.
    """
    fig, ax = figure(4.5, 4)
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    for b in reliability:
        ax.bar(b["low"], b["accuracy"], width=b["high"] - b["low"], align="edge",
               edgecolor="C0", color="C0", alpha=0.6)
    ax.plot([b["confidence"] for b in reliability], [b["accuracy"] for b in reliability],
            "o", color="C1", label="mean confidence of the bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram")
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)


def plot_history(history, path):
    """Saves both phases' loss and accuracy (or average precision) curves to a PNG.

    The boundary between the phases is marked.

    Args:
        history: A `FineTuneHistory`.
        path: The PNG's path.

    Returns:
        `path`.
    """
    logs = history.history
    epochs = np.arange(1, len(logs.get("loss", [])) + 1)
    fig, axes = figure(9, 3.5, columns=2)
    # A multi-label model's measure is its average precision, not its accuracy.
    second = "average_precision" if "average_precision" in logs else "accuracy"
    for ax, metric in zip(axes, ("loss", second)):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if logs.get(key):
                ax.plot(epochs[:len(logs[key])], logs[key], style, label=key)
        if history.top is not None and history.top.epoch:
            ax.axvline(history.head_epochs + 0.5, color="gray", linestyle=":")
            ax.text(history.head_epochs + 0.5, ax.get_ylim()[1], " top phase",
                    va="top", fontsize=7, color="gray")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _per_class_table(report):
    rows = []
    for name, row in report.per_class.items():
        average = name.endswith(" avg")
        cells = "".join(f"<td>{row[k]:.3f}</td>" for k in ("precision", "recall", "f1"))
        note = html.escape(row.get("note", ""))
        rows.append(f"<tr{' class=avg' if average else ''}><th>{html.escape(name)}</th>"
                    f"{cells}<td>{row['support']}</td><td class=note>{note}</td></tr>")
    return ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
            "<th>support</th><th></th></tr>" + "".join(rows) + "</table>")


def loss_figure(loss, images, caption):
    """A top loss as a `<figure>`: its thumbnail, its file's name, then `caption` (HTML).

    Args:
        loss: A `top_losses` entry (`"index"`, `"file"`).
        images: `{index: uint8 array}` for examples without files.
        caption: Escaped HTML for the lines under the name.
    """
    uri = thumbnail_uri(image=images.get(loss["index"])) if loss["index"] in images \
        else thumbnail_uri(file=loss["file"]) if loss["file"] else None
    picture = (f'<img src="{uri}" alt="example {loss["index"]}">' if uri
               else '<div class=missing>no image</div>')
    name = Path(loss["file"]).name if loss["file"] else f"example {loss['index']}"
    return f"<figure>{picture}<figcaption>{html.escape(name)}<br>{caption}</figcaption></figure>"


def write_page(folder, title, sections):
    """Writes `folder/report.html`: `sections` (HTML) under `title`, in the pages' style.

    Returns:
        Its path.
    """
    return write_html(Path(folder) / "report.html", title, sections)


def _top_losses_grid(report, images):
    cells = [loss_figure(loss, images, f"true: <b>{html.escape(loss['true'])}</b><br>"
                         f"predicted: <b>{html.escape(loss['predicted'])}</b> "
                         f"({loss['confidence']:.0%})") for loss in report.top_losses]
    if not cells:
        return "<p>No image was misclassified.</p>"
    return "<div class=grid>" + "".join(cells) + "</div>"


def write_report_page(report, folder, *, history=None, images=None,
                      title="Evaluation report", notes=()):
    """Writes `report.html` and its PNGs for a `Report` into `folder`.

    Args:
        report: An `evaluation.Report`.
        folder: The output folder; created if missing.
        history: A `FineTuneHistory` whose curves to plot, or `None`.
        images: `{index: uint8 array}` thumbnails of the top losses, for
            examples without files.
        title: The page's title.
        notes: Warnings shown under the summary.

    Returns:
        The path of `report.html`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plots = [("Confusion matrix", plot_confusion_matrix(
        report.confusion_matrix, report.class_names, folder / "confusion_matrix.png"))]
    plots.append(("Reliability diagram", plot_reliability(
        report.reliability, folder / "reliability.png")))
    if history is not None:
        plots.append(("Training curves", plot_history(history, folder / "history.png")))
    figures = {name: f'<img src="{data_uri(path)}" alt="{name}">' for name, path in plots}
    top = report.top_k_accuracy
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=summary>Accuracy <b>{report.accuracy:.2%}</b> on "
        f"{report.num_examples} images of {len(report.class_names)} classes; top-{top['k']} "
        f"accuracy {top['accuracy']:.2%}; macro F1 "
        f"{report.per_class['macro avg']['f1']:.3f}; expected calibration error "
        f"{report.expected_calibration_error:.3f}.</p>",
    ] + [f"<p class=warning>{html.escape(note)}</p>" for note in notes]
    if history is not None:
        sections += ["<h2>Training curves</h2>", figures["Training curves"]]
    sections += ["<h2>Confusion matrix</h2><p>Rows are the true class; the colour is "
                 "the share of that class.</p>", figures["Confusion matrix"],
                 "<h2>Per class</h2>", _per_class_table(report),
                 "<h2>Top losses</h2><p>The most confidently wrong images, worst first: "
                 "often mislabelled or unusual data.</p>",
                 _top_losses_grid(report, images or {}),
                 "<h2>Calibration</h2><p>Bars near the diagonal mean the confidence can "
                 "be read as a probability.</p>", figures["Reliability diagram"]]
    return write_page(folder, title, sections)


def plot_comparison(comparison, path):
    """Saves a bar chart of each method's accuracy and macro F1 to a PNG.

    Args:
        comparison: A `compare.Comparison`.
        path: The PNG's path.

    Returns:
        `path`.
    """
    names = [r.method for r in comparison.results]
    x = np.arange(len(names))
    fig, ax = figure(6, 3.5)
    for offset, (label, values) in zip((-0.2, 0.2), (
            (comparison.metric, [r.score for r in comparison.results]),
            ("macro F1", [r.macro_f1 for r in comparison.results]))):
        bars = ax.bar(x + offset, values, width=0.4, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"The same {comparison.split} images, three ways to a classifier")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def write_comparison_page(comparison, folder):
    """Writes `compare.html` (bar chart, table, confusion matrices) and `compare.json`.

    Args:
        comparison: A `compare.Comparison`.
        folder: The output folder; created if missing.

    Returns:
        The path of `compare.html`.
    """
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"method": r.method, comparison.metric: r.score, "macro_f1": r.macro_f1,
             "seconds": r.seconds, "report": r.report.to_dict()} for r in comparison.results]
    (folder / "compare.json").write_text(json.dumps({"split": comparison.split,
                                                     "methods": rows}, indent=1))
    chart = plot_comparison(comparison, folder / "comparison.png")
    table = "".join(f"<tr><th>{html.escape(r['method'])}</th><td>{r[comparison.metric]:.3f}</td>"
                    f"<td>{r['macro_f1']:.3f}</td><td>{r['seconds']:.1f}</td></tr>"
                    for r in rows)
    matrices = []
    for r in comparison.results if comparison.metric == "accuracy" else []:
        png = plot_confusion_matrix(r.report.confusion_matrix, r.report.class_names,
                                    folder / f"confusion_{r.method}.png", title=r.method)
        matrices.append(f'<img src="{data_uri(png)}" alt="confusion matrix, {r.method}">')
    first = comparison.results[0].report
    title = "Transfer compared with training from scratch"
    sections = [f"<h1>{title}</h1>",
                f"<p class=summary>{first.num_examples} {comparison.split} images of "
                f"{len(first.class_names)} classes, scored alike.</p>",
                f'<img src="{data_uri(chart)}" alt="{comparison.metric} and macro F1 by method">',
                f"<table><tr><th>method</th><th>{comparison.metric}</th><th>macro F1</th>"
                f"<th>seconds</th></tr>{table}</table>"]
    if matrices:
        sections.append("<h2>Confusion matrices</h2><div class=grid>" + "".join(matrices)
                        + "</div>")
    path = write_html(folder / "compare.html", title, sections)
    return path
