import os

import pytest

from tftransfer import _atomic


def test_a_published_folder_and_a_replaced_file_are_flushed_before_their_rename(
        tmp_path, monkeypatch):
    events = []
    real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(
        ("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1])
    monkeypatch.setattr(os, "rename", lambda a, b: (events.append(("rename", str(b))),
                                                    real_rename(a, b))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("rename", str(b))),
                                                     real_replace(a, b))[1])

    def write(staging):
        (staging / "inner").mkdir()
        (staging / "inner" / "shard.npy").write_bytes(b"rows")
        (staging / "manifest.json").write_text("{}")

    entry = tmp_path / "entry"
    assert _atomic.publish_folder(entry, write) == entry
    renamed = events.index(("rename", str(entry)))
    flushed = {os.path.basename(path) for kind, path in events[:renamed] if kind == "fsync"}
    assert {"shard.npy", "manifest.json", "inner"} <= flushed
    assert any(name.startswith("entry.partial-") for name in flushed)  # The folder itself.
    assert ("fsync", str(tmp_path)) in events[renamed:]  # Its parent, after the rename.

    events.clear()
    _atomic.replace_file(tmp_path / "index.json", lambda path: path.write_text("{}"))
    renamed = events.index(("rename", str(tmp_path / "index.json")))
    assert events[0][0] == "fsync" and "index.json.partial-" in events[0][1]
    assert ("fsync", str(tmp_path)) in events[renamed:]


def test_a_taken_entry_moves_on_to_the_next_one(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "kept").write_text("first")
    published = _atomic.publish_folder(
        tmp_path / "1", lambda staging: (staging / "mine").write_text("second"),
        next_entry=lambda taken: taken.with_name(str(int(taken.name) + 1)))
    assert published == tmp_path / "2" and (tmp_path / "2" / "mine").is_file()
    assert (tmp_path / "1" / "kept").read_text() == "first"
    assert _atomic.publish_folder(tmp_path / "1", lambda staging: None) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def _version(path, text):
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_text(text)


def test_overwrite_swaps_the_folders_in_one_step(tmp_path):
    entry = tmp_path / "model" / "1"
    _version(entry, "old")
    published = _atomic.publish_folder(
        entry, lambda staging: (staging / "saved_model.pb").write_text("new"), replace=True)
    assert published == entry and (entry / "saved_model.pb").read_text() == "new"
    assert sorted(p.name for p in entry.parent.iterdir()) == ["1"]


def test_an_overwrite_cut_between_its_renames_is_undone_by_the_next_call(tmp_path,
                                                                         monkeypatch):
    import os

    entry = tmp_path / "model" / "1"
    _version(entry, "old")
    monkeypatch.setattr(_atomic, "exchange", lambda first, second: False)  # No swap here.
    real_rename, calls = os.rename, []

    def crash_on_second(source, target):
        calls.append(target)
        if len(calls) == 2:  # The old folder is aside, the new one not yet in.
            raise KeyboardInterrupt
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        _atomic.publish_folder(
            entry, lambda staging: (staging / "saved_model.pb").write_text("new"),
            replace=True)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not entry.exists()  # What a crash leaves: the version moved aside ...
    monkeypatch.setattr(_atomic, "_alive", lambda pid: False)  # ... by a dead process.
    _atomic.restore_replaced(entry)  # The next call (any publish) puts it back.
    assert (entry / "saved_model.pb").read_text() == "old"
    assert sorted(p.name for p in entry.parent.iterdir() if ".partial-" not in p.name) == ["1"]


def test_a_failed_swap_leaves_the_old_version(tmp_path, monkeypatch):
    entry = tmp_path / "model" / "1"
    _version(entry, "old")

    def refuse(first, second):
        raise OSError(13, "Permission denied", str(second))

    monkeypatch.setattr(_atomic, "exchange", refuse)
    with pytest.raises(OSError):
        _atomic.publish_folder(
            entry, lambda staging: (staging / "saved_model.pb").write_text("new"),
            replace=True)
    assert (entry / "saved_model.pb").read_text() == "old"
    assert sorted(p.name for p in entry.parent.iterdir()) == ["1"]


def test_another_hosts_staging_folder_survives_cleanup_until_it_is_old(tmp_path):
    import time

    entry = tmp_path / "cache" / "entry"
    entry.parent.mkdir()
    # PID 1 is alive here, 999999 is not: on another host neither says anything.
    for pid in (1, 999999):
        (entry.parent / f"entry.partial-{pid}-0ther0st-abcd1234").mkdir()
    mine_dead = entry.parent / f"entry.partial-999999-{_atomic.HOST}-abcd1234"
    mine_dead.mkdir()
    _atomic.remove_abandoned(entry)
    left = sorted(p.name for p in entry.parent.iterdir())
    assert left == ["entry.partial-1-0ther0st-abcd1234", "entry.partial-999999-0ther0st-abcd1234"]
    old = time.time() - _atomic.ABANDONED_AFTER - 60
    os.utime(entry.parent / left[0], (old, old))
    _atomic.remove_abandoned(entry)
    assert sorted(p.name for p in entry.parent.iterdir()) == [left[1]]
