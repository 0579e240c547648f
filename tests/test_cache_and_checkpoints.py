"""Teacher-output cache and checkpoints: reuse, staleness, corruption, atomicity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.core.checkpoint import CheckpointStore
from distill.tasks.classification.teachers import module_fingerprint
from distill.tasks.classification.teachers.cache import TeacherCache, cache_key


def test_cache_hit_miss_and_stale(tmp_path: Path) -> None:
    cache = TeacherCache(tmp_path / "c")
    calls = []

    def compute() -> torch.Tensor:
        calls.append(1)
        return torch.arange(12.0).reshape(3, 4)

    key = cache_key("teacher-a", "split-1", {"mean": 0.1})
    t1, hit1 = cache.get_or_compute(key, compute)
    t2, hit2 = cache.get_or_compute(key, compute)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert torch.equal(t1, t2)
    # another teacher, split or preprocessing is another key
    assert cache_key("teacher-b", "split-1", {"mean": 0.1}) != key
    assert cache_key("teacher-a", "split-1", {"mean": 0.2}) != key
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_corrupt_or_truncated_cache_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = TeacherCache(tmp_path)
    key = cache_key("t", "s", {})
    cache.store(key, torch.ones(50, 10))
    path = cache.path_for(key)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits in the payload
    path.write_bytes(bytes(data))
    assert cache.load(key) is None
    assert "checksum" in caplog.text
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    assert cache.load(key) is None
    assert "unreadable" in caplog.text
    t, hit = cache.get_or_compute(key, lambda: torch.zeros(50, 10))
    assert not hit and torch.equal(cache.load(key), torch.zeros(50, 10))


def test_stale_entry_with_foreign_key_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = TeacherCache(tmp_path)
    key = cache_key("t", "s", {})
    other = cache_key("t", "s2", {})
    cache.store(other, torch.ones(3, 2))
    cache.path_for(other).rename(cache.path_for(key))
    assert cache.load(key) is None
    assert "stale" in caplog.text


def test_module_fingerprint_follows_weights() -> None:
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    fp = module_fingerprint(m)
    assert module_fingerprint(m) == fp
    with torch.no_grad():
        m.weight[0, 0] += 1e-3
    assert module_fingerprint(m) != fp


def test_checkpoints_keep_two_and_skip_corrupt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(tmp_path / "ck")
    for epoch in (1, 2, 3):
        store.save(epoch, {"epoch": epoch, "w": torch.full((4,), float(epoch))})
    files = sorted(p.name for p in (tmp_path / "ck").glob("epoch-*.pt"))
    assert files == ["epoch-0002.pt", "epoch-0003.pt"]
    assert store.load_latest()["epoch"] == 3
    newest = tmp_path / "ck" / "epoch-0003.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # a kill mid-write of an older, non-atomic tool
    state = store.load_latest()
    assert state["epoch"] == 2
    assert "fails its checksum" in caplog.text
