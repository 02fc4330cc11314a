"""Staged writes: write under a partial name, then rename into place.

A reader, or a run that starts after a crash, sees the old content or the
new, never half of one: renames within a file system are atomic. Partial
names carry the writer's process id, so that `remove_abandoned` can tell
what a dead writer left from what a live one is still writing.
"""

import os
import shutil
import uuid
from pathlib import Path

_PARTIAL = ".partial-"


def partial_path(path):
    """Returns a fresh staging path beside `path`: `<name>.partial-<pid>-<tag><suffix>`.

    The suffix is kept because some writers add their own to any other
    name (`np.savez` appends `.npz`).

    Args:
        path: The final path.

    Returns:
        A `Path` in the same folder, so the rename stays on one file system.
    """
    path = Path(path)
    return path.with_name(f"{path.name}{_PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}"
                          f"{path.suffix}")


def publish_folder(entry, write, *, replace=False):
    """Fills a folder through `write(staging)` and renames it to `entry`.

    If `write` raises (Ctrl-C included), the staging folder is removed and
    the error goes on.

    Args:
        entry: The folder's final path.
        write: Fills the empty folder it is given.
        replace: Whether an existing `entry` is replaced. It is moved aside
            first, then removed, so `entry` is at every moment the old
            folder or the new one. Without `replace`, an `entry` that
            another process published first is kept and this call's copy
            discarded.

    Returns:
        `True` if this call's folder was published, `False` if another
        process's was there first.
    """
    entry = Path(entry)
    staging = partial_path(entry)
    staging.mkdir(parents=True)
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if replace and entry.exists():
        aside = partial_path(entry)
        os.rename(entry, aside)
        os.rename(staging, entry)
        shutil.rmtree(aside, ignore_errors=True)
        return True
    try:
        os.rename(staging, entry)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not entry.exists():
            raise
        return False
    return True


def replace_file(path, write):
    """Writes a file through `write(staging_path)` and a rename over `path`.

    Args:
        path: The file's final path.
        write: Writes the content to the path it is given.

    Example:
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "state.json"
    >>> replace_file(target, lambda staging: staging.write_text("{}"))
    >>> target.read_text()
    '{}'
    """
    path = Path(path)
    staging = partial_path(path)
    try:
        write(staging)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def remove_abandoned(entry):
    """Deletes the partial copies of `entry` whose writing process is gone.

    Args:
        entry: A path written through `publish_folder` or `replace_file`;
            its name may be a glob pattern (`cache/images-*`).
    """
    entry = Path(entry)
    for partial in entry.parent.glob(f"{entry.name}{_PARTIAL}*"):
        pid = partial.name.split(_PARTIAL)[1].split("-")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)


def _alive(pid):
    if pid == os.getpid():
        return False  # This process is not writing it now.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
