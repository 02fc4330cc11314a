"""Staged writes: write under a partial name, then rename into place.

A reader, or a run that starts after a crash, sees the old content or the
new, never half of one: renames within a file system are atomic. Partial
names carry the writer's process id and host, so that `remove_abandoned` can
tell what a dead writer left from what a live one is still writing: a
partial copy is removed when it is this host's and its process is gone, or,
from another host (a cache shared over the network, a container), only once
it is `ABANDONED_AFTER` seconds old.
"""

import ctypes
import errno
import os
import hashlib
import shutil
import socket
import time
import uuid
from pathlib import Path

_PARTIAL = ".partial-"
#: Seconds after which another host's partial copy counts as abandoned: no
#: extraction or export takes a day.
ABANDONED_AFTER = 24 * 3600
#: This host, in partial names (a short digest: hostnames may hold dashes).
HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
#: An old folder moved aside while its replacement is renamed in, where the
#: two cannot be swapped in one step; `restore_replaced` puts it back.
_REPLACED = ".replaced-"


def partial_path(path):
    """Returns a fresh staging path beside `path`: `<name>.partial-<pid>-<host>-<tag><suffix>`.

    The suffix is kept because some writers add their own to any other
    name (`np.savez` appends `.npz`).

    Args:
        path: The final path.

    Returns:
        A `Path` in the same folder, so the rename stays on one file system.
    """
    path = Path(path)
    return path.with_name(f"{path.name}{_PARTIAL}{os.getpid()}-{HOST}-"
                          f"{uuid.uuid4().hex[:8]}{path.suffix}")


def is_partial_of(candidate, path):
    """Whether `candidate` is a staging path of `path` (one that `partial_path` makes).

    Args:
        candidate: A path, or a name, in `path`'s folder.
        path: The final path.

    Returns:
        A bool.

    Example:
    >>> is_partial_of(partial_path("/tmp/mark.json"), "/tmp/mark.json")
    True
    >>> is_partial_of("/tmp/mark.json", "/tmp/mark.json")
    False
    """
    return Path(candidate).name.startswith(Path(path).name + _PARTIAL)


def publish_folder(entry, write, *, replace=False, next_entry=None):
    """Fills a folder through `write(staging)` and renames it to `entry`.

    If `write` raises (Ctrl-C included), the staging folder is removed and
    the error goes on. Every file and the folder are flushed to disk
    (`fsync`) before the rename, and the parent after it, so that after a
    power cut the entry is there whole or not at all.

    Args:
        entry: The folder's final path.
        write: Fills the empty folder it is given.
        replace: Whether an existing `entry` is replaced: swapped with the
            new folder in one step where the system can (`exchange`), so
            `entry` is at every moment the old folder or the new one;
            elsewhere moved aside first, and a crash between the two
            renames is undone by the next call (`restore_replaced`).
            Without `replace`, an `entry` that
            another process published first is kept and this call's copy
            discarded.
        next_entry: With `replace=False`: when another process published
            `entry` first, `next_entry(entry)` names the next path to try
            with the same copy (say, the next version), or `None` to give up.

    Returns:
        The path this call's folder was published at, or `None` if another
        process's was there first (and `next_entry` gave no other).
    """
    entry = Path(entry)
    restore_replaced(entry)
    staging = partial_path(entry)
    staging.mkdir(parents=True)
    try:
        write(staging)
        sync_tree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if replace and entry.exists():
        try:
            swapped = exchange(staging, entry)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if swapped:  # `staging` now holds the old folder.
            _sync_folder(entry.parent)
            shutil.rmtree(staging, ignore_errors=True)
            return entry
        # No atomic swap here: move the old one aside under a name that
        # `restore_replaced` knows, so a crash between the renames is undone.
        aside = entry.with_name(f"{entry.name}{_REPLACED}{os.getpid()}-{HOST}-"
                                f"{uuid.uuid4().hex[:8]}")
        os.rename(entry, aside)
        os.rename(staging, entry)
        _sync_folder(entry.parent)
        shutil.rmtree(aside, ignore_errors=True)
        return entry
    while entry is not None:
        try:
            os.rename(staging, entry)
        except OSError:
            if not entry.exists():
                shutil.rmtree(staging, ignore_errors=True)
                raise
            entry = next_entry(entry) if next_entry else None
            continue
        _sync_folder(entry.parent)
        return entry
    shutil.rmtree(staging, ignore_errors=True)
    return None


def exchange(first, second) -> bool:
    """Swaps two paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`).

    Args:
        first, second: Two existing paths on one file system.

    Returns:
        `True` if they were swapped; `False` where the system or the file
        system cannot (then nothing changed).
    """
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False  # Not glibc 2.28+ (or not Linux).
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second),
                 rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(second))


def restore_replaced(entry):
    """Puts back an old folder that a crashed replacement left moved aside.

    Only where `entry` itself is missing: if the new folder made it into
    place, the old one is removed instead.

    Args:
        entry: A path published with `publish_folder(..., replace=True)`.
    """
    entry = Path(entry)
    for aside in sorted(entry.parent.glob(f"{entry.name}{_REPLACED}*")):
        if not _abandoned(aside, _REPLACED):
            continue
        if entry.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(aside, entry)


def sync_tree(folder):
    """`fsync`s every file below `folder`, then each folder, deepest first."""
    folders = []
    for root, _, files in os.walk(folder):
        folders.append(root)
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
    for root in reversed(folders):
        _sync_folder(root)


def _sync_folder(folder):
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # Some file systems cannot open a folder; nothing to flush then.
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


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
        with open(staging, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def remove_abandoned(entry):
    """Deletes the partial copies of `entry` whose writing process is gone.

    Args:
        entry: A path written through `publish_folder` or `replace_file`;
            its name may be a glob pattern (`cache/images-*`).
    """
    entry = Path(entry)
    for partial in entry.parent.glob(f"{entry.name}{_PARTIAL}*"):
        if not _abandoned(partial, _PARTIAL):
            continue
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)


def _abandoned(path, marker):
    """Whether the writer named in a partial path is gone (see the module's docstring)."""
    parts = path.name.split(marker)[1].split("-")
    pid, host = parts[0], parts[1] if len(parts) > 2 else HOST
    if host != HOST or not pid.isdigit():
        try:
            return time.time() - path.lstat().st_mtime > ABANDONED_AFTER
        except OSError:
            return False
    return not _alive(int(pid))


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
