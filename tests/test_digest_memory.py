"""Digests remembered between runs (``[canary] rehash = "changed"``): a file whose identity
(path, inode, size, modification and change times) is unchanged is not read again; any write,
even one that keeps the size and puts the modification time back, is caught."""

from __future__ import annotations

import json
import os
import time

import pytest

from lorawatch.errors import IntegrityError
from lorawatch.inputs import file_identity
from lorawatch.registry import files


def _old_file(path, data: bytes):
    """A file written, then left alone for longer than the racy window (here: none)."""
    path.write_bytes(data)
    return path


def test_a_file_read_once_is_known_by_identity_and_a_rewrite_with_the_same_size_and_mtime_is_not(tmp_path):
    weights = _old_file(tmp_path / "w.safetensors", b"a" * 4096)
    memory = files.DigestMemory(tmp_path / "cache" / "verified-files.json", racy_s=0)
    digest = files.sha256_file(weights, memory)
    memory.save()
    saved = tmp_path / "cache" / "verified-files.json"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    again = files.DigestMemory(saved)
    assert again.get(file_identity(weights)) == digest

    stat = weights.stat()
    time.sleep(0.02)  # past the file system's timestamp granularity
    with open(weights, "r+b") as handle:  # same size, other bytes
        handle.write(b"b")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the modification time put back
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert again.get(file_identity(weights)) is None
    with pytest.raises(IntegrityError, match="changed after registration"):
        files.verify_files(tmp_path, {"w.safetensors": {"sha256": digest, "size": 4096}}, "adapter x@v1", again)


def test_a_file_changed_just_before_it_was_read_is_not_remembered(tmp_path):
    """Timestamps are coarse on some file systems: a write right after the read could keep
    the identity, so a file modified within the racy window is read again next time."""
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"fresh")
    memory = files.DigestMemory(tmp_path / "verified.json")  # the default window: 2 s
    files.verify_files(tmp_path, {"w.bin": {"sha256": files.sha256_file(weights), "size": 5}}, "x", memory)
    assert not (tmp_path / "verified.json").exists()


def test_a_malformed_memory_counts_as_empty_and_is_replaced_whole(tmp_path):
    weights = _old_file(tmp_path / "w.bin", b"content")
    saved = tmp_path / "verified.json"
    digest = files.sha256_file(weights)
    real = os.path.realpath(weights)
    forged = {real: [1, 2, 3, 4, 5, "not a digest"], "other": "x"}
    for text in ["{not json", json.dumps([1, 2]), json.dumps(forged), "\x00"]:
        saved.write_text(text)
        memory = files.DigestMemory(saved, racy_s=0)
        assert memory.get(file_identity(weights)) is None
    files._hashed.clear()  # this process's own memory: the file must be read
    files.verify_files(tmp_path, {"w.bin": {"sha256": digest, "size": 7}}, "x", memory)
    stored = json.loads(saved.read_text())
    assert list(stored) == [real] and stored[real][5] == digest


def test_two_commands_saving_at_once_keep_both_entries_or_lose_only_new_ones(tmp_path):
    saved = tmp_path / "verified.json"
    one, two = _old_file(tmp_path / "one", b"1"), _old_file(tmp_path / "two", b"2")
    first, second = files.DigestMemory(saved, racy_s=0), files.DigestMemory(saved, racy_s=0)
    files._hashed.clear()
    files.sha256_file(one, first)
    files.sha256_file(two, second)
    first.save()
    second.save()  # reads what the first saved, adds its own
    stored = json.loads(saved.read_text())
    assert set(stored) == {os.path.realpath(one), os.path.realpath(two)}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".verified")]  # no temporary left


def test_an_unwritable_cache_leaves_verification_working(tmp_path):
    weights = _old_file(tmp_path / "w.bin", b"content")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would go")
    memory = files.DigestMemory(blocker / "verified.json", racy_s=0)
    files.verify_files(tmp_path, {"w.bin": {"sha256": files.sha256_file(weights), "size": 7}}, "x", memory)
    assert blocker.read_text().startswith("a file")
