"""Every notebook runs top to bottom, offline, on the bundled base and demo data."""

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
# Small epoch counts, so that the suite stays fast.
OFFLINE = {"HEAD_EPOCHS": "3", "FINE_TUNE_EPOCHS": "1"}


def test_there_are_five_notebooks_with_outputs_stripped():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb", "02_fine_tuning.ipynb", "03_tf_hub.ipynb",
        "04_accelerators.ipynb", "05_export_and_serve.ipynb"]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        assert "colab-badge.svg" in notebook.cells[0].source, path.name
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


def offline(notebook):
    """Sets small epoch counts in the cell tagged `parameters`."""
    for cell in notebook.cells:
        if "parameters" in cell.metadata.get("tags", []):
            for name, value in OFFLINE.items():
                cell.source = re.sub(rf"^({name}(, \w+)*) = .*$",
                                     lambda m: _assign(m.group(1)), cell.source,
                                     flags=re.M)
            return notebook
    raise AssertionError("no cell tagged 'parameters'")


def _assign(names):
    values = [OFFLINE.get(name.strip(), "1") for name in names.split(",")]
    return f"{names} = {', '.join(values)}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_offline(path, tmp_path):
    from nbclient import NotebookClient

    notebook = offline(nbformat.read(path, as_version=4))
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # Raises CellExecutionError on any cell error.
    outputs = [o for cell in notebook.cells if cell.cell_type == "code"
               for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if "plt.show()" in "".join(cell.source for cell in notebook.cells):
        assert any("image/png" in o.get("data", {}) for o in outputs), "no plot rendered"
