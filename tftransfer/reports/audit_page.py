"""The audit's files: `audit.json`, `audit.csv` and `audit.html`, a page of thumbnails."""

import csv
import html
import json
from pathlib import Path
from typing import Union

from tftransfer.reports.page import thumbnail_uri, write_html

_TITLES = {"leak": "Leaks: the same photo in two splits",
           "duplicate": "Duplicates within a split",
           "label": "Likely label errors",
           "outlier": "Outliers: far from every other photo"}
_MAX_SHOWN = 60


def save_audit(report, folder: Union[str, Path], title: str = "Data audit") -> Path:
    """Writes `audit.json`, `audit.csv` and `audit.html` for an `AuditReport`.

    Args:
        report: The `data_audit.AuditReport`.
        folder: The output folder; created if missing.
        title: The page's title.

    Returns:
        The path of `audit.html`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audit.json").write_text(json.dumps(report.to_dict(), indent=1))
    with (folder / "audit.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["kind", "file", "other", "score", "split"])
        for f in report.findings:
            writer.writerow([f.kind, f.file, f.other or "", f.score, f.split])
    sections = [f"<h1>{html.escape(title)}</h1>",
                f"<p class=summary>{html.escape(report.summary())}. Nothing was deleted "
                "or moved.</p>"]
    if report.label_check != "cleanlab":
        sections.append(f"<p>Label errors: {html.escape(report.label_check)}.</p>")
    for kind, heading in _TITLES.items():
        found = report.of_kind(kind)
        if not found:
            continue
        sections.append(f"<h2>{heading} ({len(found)})</h2><div class=grid>")
        sections += [_card(f) for f in found[:_MAX_SHOWN]]
        sections.append("</div>")
        if len(found) > _MAX_SHOWN:
            sections.append(f"<p>... and {len(found) - _MAX_SHOWN} more in audit.csv.</p>")
    return write_html(folder / "audit.html", title, sections, extra_style=(
        "figure.pair { width: 270px; } .pair > div { display: flex; gap: 4px; }"))


def _image(file):
    uri = thumbnail_uri(file=file)
    name = html.escape(Path(file).name)
    return f'<img src="{uri}" alt="{name}">' if uri else "<div class=missing></div>"


def _card(finding):
    caption = f"{html.escape(finding.split)}: {html.escape(Path(finding.file).name)}"
    if finding.kind in ("leak", "duplicate"):
        return (f"<figure class=pair><div>{_image(finding.file)}{_image(finding.other)}</div>"
                f"<figcaption>{caption} ~ {html.escape(Path(finding.other).name)}, "
                f"similarity {finding.score:.3f}</figcaption></figure>")
    if finding.kind == "label":
        given = Path(finding.file).parent.name
        return (f"<figure>{_image(finding.file)}<figcaption>{caption}<br>given "
                f"<b>{html.escape(given)}</b>, suggested <b>{html.escape(finding.other)}"
                f"</b> (p wrong {finding.score:.2f})</figcaption></figure>")
    return (f"<figure>{_image(finding.file)}<figcaption>{caption}<br>z {finding.score:.1f}"
            "</figcaption></figure>")
