"""Advisory locks: readers share, a deleter or writer waits for none of them."""

import pytest

from tftransfer import _locks

pytestmark = pytest.mark.skipif(_locks.fcntl is None, reason="no flock on this system")


def test_readers_share_and_keep_an_exclusive_lock_out_until_they_close(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("{}")
    first, second = (_locks.try_lock(path, shared=True) for _ in range(2))
    assert first and second
    assert _locks.try_lock(path, shared=False) is False
    _locks.release(first)
    assert _locks.try_lock(path, shared=False) is False  # The second reader still holds it.
    _locks.release(second)
    exclusive = _locks.try_lock(path, shared=False)
    assert exclusive and _locks.try_lock(path, shared=True) is False
    _locks.release(exclusive)


def test_a_missing_file_is_not_locked_unless_created(tmp_path):
    assert _locks.try_lock(tmp_path / "absent", shared=False) is None
    lock = _locks.try_lock(tmp_path / "lock", shared=False, create=True)
    assert lock and (tmp_path / "lock").is_file()
    _locks.release(lock)
    _locks.release(None)
    _locks.release(False)
