"""Advisory file locks (`flock`) that say "in use" across processes on one host.

Where there is no `fcntl` (Windows) or the filesystem has no locks, nothing
is locked and callers go on unguarded, as they did before locks.
"""

from pathlib import Path
from typing import IO, Literal, Optional, Union

try:
    import fcntl
except ImportError:  # Windows: no advisory locks.
    fcntl = None


def try_lock(path: Union[str, Path], *, shared: bool,
             create: bool = False) -> Union[IO, Literal[False], None]:
    """Takes a lock on a file without waiting.

    Args:
        path: The file to lock.
        shared: A shared lock (readers) rather than an exclusive one.
        create: Create the file if it is missing.

    Returns:
        The open file, which holds the lock until it is closed; `False` if
        another process holds a lock that conflicts; `None` if nothing could
        be locked (no `fcntl`, the file cannot be opened, or the filesystem
        has no locks).
    """
    if fcntl is None:
        return None
    try:
        handle = open(path, "a+" if create else "rb")
    except OSError:
        return None
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return False
    except OSError:
        handle.close()
        return None
    return handle


def release(lock: Optional[IO]) -> None:
    """Closes a lock from `try_lock` (`None` and `False` are left alone)."""
    if lock:
        lock.close()
