import pytest

from tftransfer.data.labels_file import read_labels, write_labels
from tftransfer.errors import TransferError


def test_names_with_any_character_but_control_ones_round_trip(tmp_path):
    names = ["cat", "Käse", "a\u2028b", "semi;colon", "  spaced  ", "é"]
    assert read_labels(write_labels(tmp_path / "labels.txt", names)) == names


def test_a_file_from_another_system_reads_the_same(tmp_path):
    (tmp_path / "labels.txt").write_bytes(b"cat\r\ndog\r\n")
    assert read_labels(tmp_path / "labels.txt") == ["cat", "dog"]
    (tmp_path / "last.txt").write_bytes(b"cat\ndog")  # No newline after the last.
    assert read_labels(tmp_path / "last.txt") == ["cat", "dog"]


def test_control_characters_and_other_encodings_are_refused(tmp_path):
    with pytest.raises(TransferError, match="control character"):
        write_labels(tmp_path / "labels.txt", ["a\nb"])
    assert not (tmp_path / "labels.txt").exists()
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(TransferError, match="not UTF-8"):
        read_labels(tmp_path / "latin1.txt")
    with pytest.raises(TransferError, match="not found"):
        read_labels(tmp_path / "missing.txt")
