"""`report.html` for a multi-label classifier: the page of a `LabelReport`.

Like the single-label page (`tftransfer.reports.report_page`), it opens in a
browser with no server. It shows the summary, the per-label table with
each label's threshold, the precision-recall curves of the worst labels
(by average precision), the top losses as thumbnails with the labels given
and predicted, and the training curves after training.
"""

import html
from pathlib import Path

from tftransfer.reports.page import data_uri, figure, save_figure
from tftransfer.reports.report_page import loss_figure, plot_history, write_page

#: How many of the worst labels the precision-recall figure shows.
CURVES_SHOWN = 6


def plot_pr_curves(report, path, count=CURVES_SHOWN):
    """Saves the precision-recall curves of the labels with the lowest AP to a PNG.

    Args:
        report: A `label_report.LabelReport`.
        path: The PNG's path.
        count: How many labels to show.

    Returns:
        `path`.
    """
    worst = sorted(report.curves, key=lambda n: report.per_label[n]["average_precision"])
    fig, ax = figure(5, 4)
    for name in worst[:count]:
        precision, recall = report.curves[name]
        ax.step([0.0, *recall], [precision[0], *precision], where="post",
                label=f"{name} (AP {report.per_label[name]['average_precision']:.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Precision-recall, the {min(count, len(worst))} worst labels")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _per_label_table(report):
    rows = []
    for name, row in sorted(report.per_label.items(),
                            key=lambda item: item[1]["average_precision"]):
        cells = "".join(f"<td>{row[k]:.3f}</td>" for k in
                        ("average_precision", "precision", "recall", "f1", "threshold"))
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}<td>{row['support']}</td>"
                    f"<td class=note>{html.escape(row.get('note', ''))}</td></tr>")
    return ("<table><tr><th>label</th><th>AP</th><th>precision</th><th>recall</th>"
            "<th>F1</th><th>threshold</th><th>support</th><th></th></tr>"
            + "".join(rows) + "</table>")


def _top_losses_grid(report, images):
    cells = [loss_figure(loss, images,
                         f"given: <b>{html.escape(', '.join(loss['true']) or 'none')}</b><br>"
                         f"predicted: <b>{html.escape(', '.join(loss['predicted']) or 'none')}"
                         "</b>") for loss in report.top_losses]
    if not cells:
        return "<p>Every label of every image was decided right.</p>"
    return "<div class=grid>" + "".join(cells) + "</div>"


def write_label_report_page(report, folder, *, history=None, images=None,
                            title="Evaluation report", notes=()):
    """Writes `report.html` and its PNGs for a `LabelReport` into `folder`.

    Args:
        report: A `label_report.LabelReport`.
        folder, history, images, title, notes: As in
            `report_page.write_report_page`.

    Returns:
        The path of `report.html`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=summary>mAP <b>{report.mean_average_precision:.3f}</b> on "
        f"{report.num_examples} images ({report.unlabelled} with no label) of "
        f"{len(report.class_names)} labels; micro F1 {report.micro_f1:.3f}; macro F1 "
        f"{report.macro_f1:.3f}; every label right on {report.subset_accuracy:.1%} of "
        "the images.</p>",
    ] + [f"<p class=warning>{html.escape(note)}</p>" for note in notes]
    if history is not None:
        curves = plot_history(history, folder / "history.png")
        sections += ["<h2>Training curves</h2>",
                     f'<img src="{data_uri(curves)}" alt="Training curves">']
    if report.curves:
        pr = plot_pr_curves(report, folder / "precision_recall.png")
        sections += ["<h2>Precision and recall</h2><p>The labels with the lowest average "
                     "precision: each curve is that label's precision against its recall "
                     "as its threshold falls.</p>",
                     f'<img src="{data_uri(pr)}" alt="Precision-recall curves">']
    sections += ["<h2>Per label</h2><p>Worst first. Precision, recall and F1 count the "
                 "decisions at each label's threshold, chosen for the best F1 on the "
                 "validation images.</p>", _per_label_table(report),
                 "<h2>Top losses</h2><p>The images with a wrong label and the highest loss, "
                 "worst first: often mislabelled or unusual data.</p>",
                 _top_losses_grid(report, images or {})]
    return write_page(folder, title, sections)
