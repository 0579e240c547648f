"""Data sources: IDX, digits, tables; seeded splits with stable ids; clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill.data import read_idx, write_idx
from distill.tasks.classification.data import build_data
from distill.errors import DataError
from distill.tasks.classification.recipe import DataConfig


def test_idx_round_trip(tmp_path: Path) -> None:
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", a)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)


def test_idx_truncated_and_bad_magic(tmp_path: Path) -> None:
    a = np.zeros((5, 4, 4), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", a)
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "magic.gz").write_bytes(gzip.compress(b"\x01\x02" + raw[2:]))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "magic.gz")
    (tmp_path / "notgz.gz").write_bytes(b"plain bytes, not gzip")
    with pytest.raises(DataError, match="cannot read IDX"):
        read_idx(tmp_path / "notgz.gz")


def test_fashion_from_idx_folder(idx_dir: Path) -> None:
    b = build_data(DataConfig(source="fashion_mnist", path=str(idx_dir), val_fraction=0.2, seed=0))
    assert (len(b.train), len(b.val), len(b.test)) == (240, 60, 100)
    assert b.in_shape == (1, 16, 16)
    assert b.num_classes == 10 and b.class_names[0] == "T-shirt/top"
    ids = set(b.train.ids) | set(b.val.ids)
    assert len(ids) == 300 and not set(b.train.ids) & set(b.val.ids)
    assert abs(float(b.train.x.mean())) < 1e-4  # normalised with train statistics


def test_missing_fashion_folder_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="missing train-images") as exc:
        build_data(DataConfig(source="fashion_mnist", path=str(tmp_path / "none")))
    assert "data.path" in str(exc.value)
    import distill.data

    monkeypatch.setattr(distill.data, "FASHION_MNIST_DIR", str(tmp_path / "default-absent"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        build_data(DataConfig(source="fashion_mnist"))


def test_image_label_count_mismatch(idx_dir: Path) -> None:
    write_idx(idx_dir / "train-labels-idx1-ubyte.gz", np.zeros(299, dtype=np.uint8))
    with pytest.raises(DataError, match="300 train images but 299 labels"):
        build_data(DataConfig(source="fashion_mnist", path=str(idx_dir)))


def test_labels_out_of_range(idx_dir: Path) -> None:
    write_idx(idx_dir / "t10k-labels-idx1-ubyte.gz", np.full(100, 12, dtype=np.uint8))
    with pytest.raises(DataError, match="labels must be in 0..9"):
        build_data(DataConfig(source="fashion_mnist", path=str(idx_dir)))


def test_empty_idx_split(idx_dir: Path) -> None:
    write_idx(idx_dir / "t10k-images-idx3-ubyte.gz", np.zeros((0, 16, 16), dtype=np.uint8))
    write_idx(idx_dir / "t10k-labels-idx1-ubyte.gz", np.zeros(0, dtype=np.uint8))
    with pytest.raises(DataError, match="empty"):
        build_data(DataConfig(source="fashion_mnist", path=str(idx_dir)))


def test_digits_split_is_seeded_and_stable() -> None:
    a = build_data(DataConfig(source="digits", seed=3))
    b = build_data(DataConfig(source="digits", seed=3))
    c = build_data(DataConfig(source="digits", seed=4))
    assert list(a.train.ids) == list(b.train.ids)
    assert list(a.train.ids) != list(c.train.ids)
    total = len(a.train) + len(a.val) + len(a.test)
    assert total == 1797
    all_ids = [*a.train.ids, *a.val.ids, *a.test.ids]
    assert len(set(all_ids)) == 1797
    # the same id always names the same image, whatever the split seed

    def by_id(bundle):
        out = {}
        for split in bundle.splits().values():
            raw = split.x.numpy() * bundle.preprocessing["std"] + bundle.preprocessing["mean"]
            out.update(zip(split.ids, raw))
        return out

    ia, ic = by_id(a), by_id(c)
    for key in ("digits-0000", "digits-0777", "digits-1796"):
        assert np.allclose(ia[key], ic[key], atol=1e-4)


def test_train_limit() -> None:
    b = build_data(DataConfig(source="digits", train_limit=100))
    assert len(b.train) == 100


def _table(tmp_path: Path, n: int = 120, fmt: str = "csv") -> Path:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "uid": [f"u{i}" for i in range(n)]})
    df["species"] = np.where(df["a"] + df["b"] > 0, "cat", "dog")
    path = tmp_path / f"t.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_sources(tmp_path: Path, fmt: str) -> None:
    p = _table(tmp_path, fmt=fmt)
    b = build_data(DataConfig(source="table", path=str(p), label_column="species", id_column="uid"))
    assert b.in_shape == (2,)
    assert b.class_names == ["cat", "dog"]
    assert all(i.startswith("u") for i in b.train.ids)
    assert len(b.train) + len(b.val) + len(b.test) == 120


def test_table_errors(tmp_path: Path) -> None:
    p = _table(tmp_path)
    with pytest.raises(DataError, match=r"label column 'label' is not in .*its columns are: a, b, uid, species"):
        build_data(DataConfig(source="table", path=str(p)))
    with pytest.raises(DataError, match="not numeric: uid"):
        build_data(DataConfig(source="table", path=str(p), label_column="species"))
    with pytest.raises(DataError, match="table file not found"):
        build_data(DataConfig(source="table", path=str(tmp_path / "x.csv"), label_column="species"))
    with pytest.raises(DataError, match="data.path is not set"):
        build_data(DataConfig(source="table", label_column="species"))
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b,species\n")
    with pytest.raises(DataError, match="has no rows"):
        build_data(DataConfig(source="table", path=str(empty), label_column="species"))
    nan = tmp_path / "nan.csv"
    nan.write_text("a,b,species\n1,2,x\n,3,y\n4,inf,x\n")
    with pytest.raises(DataError, match="2 missing/NaN/inf feature values in 2 rows"):
        build_data(DataConfig(source="table", path=str(nan), label_column="species"))
    corrupt = tmp_path / "bad.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="cannot read table"):
        build_data(DataConfig(source="table", path=str(corrupt), label_column="species"))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a,b,species\n1,2,caf\xe9\n3,4,th\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        build_data(DataConfig(source="table", path=str(latin), label_column="species"))
