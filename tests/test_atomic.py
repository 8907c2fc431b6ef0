"""``salseg.atomic.atomic_output``: the one temp-file-then-rename writer behind every file salseg
writes (weights, ONNX exports, caches, reports)."""
from __future__ import annotations

import pytest

from salseg.atomic import OutputExistsError, atomic_output, write_bytes_atomic


def test_atomic_output_moves_into_place_and_refuses_existing(tmp_path):
    dest = tmp_path / "sub" / "out.bin"
    with atomic_output(dest) as tmp:
        assert tmp.parent == dest.parent and not dest.exists()
        tmp.write_bytes(b"abc")
    assert dest.read_bytes() == b"abc"
    with pytest.raises(OutputExistsError), atomic_output(dest):
        pass
    with atomic_output(dest, overwrite=True) as tmp:
        tmp.write_bytes(b"xyz")
    assert dest.read_bytes() == b"xyz"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.bin"]


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_output(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    write_bytes_atomic(b"1", dest)
    assert dest.read_bytes() == b"1"
