"""Property-based fuzzing of the recipe loader and the data readers: any input either
loads or raises our one clear error type, never a stray exception."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.data import read_idx
from distill.tasks.classification.data import build_data
from distill.errors import DataError, RecipeError
from distill.core.recipes import load_recipe, validate_recipe
from distill.tasks.classification.recipe import DataConfig, Recipe

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=12))
keys = st.sampled_from(
    ["name", "data", "teacher", "student", "distill", "train", "eval", "output", "source", "epochs", "batch_size",
     "loss", "weight", "temperature", "arch", "params", "hidden", "optimizer", "lr", "path", "seed", "bogus"]
)  # fmt: skip
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
                      max_leaves=20)  # fmt: skip


@FUZZ
@given(st.dictionaries(keys, values, max_size=6))
def test_any_mapping_validates_or_raises_recipe_error(raw: dict) -> None:
    try:
        assert isinstance(validate_recipe(raw), Recipe)
    except RecipeError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@FUZZ
@given(st.binary(max_size=300))
def test_any_file_content_loads_or_raises_recipe_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "r.yaml"
        p.write_bytes(content)
        try:
            load_recipe(p)
        except RecipeError:
            pass


@FUZZ
@given(st.lists(st.text(max_size=30), max_size=4))
def test_any_override_applies_or_raises_recipe_error(overrides: list[str]) -> None:
    try:
        load_recipe(raw={}, overrides=overrides)
    except RecipeError:
        pass


@FUZZ
@given(st.binary(max_size=200), st.booleans())
def test_any_idx_bytes_read_or_raise_data_error(content: bytes, compress: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / ("x.gz" if compress else "x.idx")
        p.write_bytes(gzip.compress(content) if compress else content)
        try:
            read_idx(p)
        except DataError:
            pass


@FUZZ
@given(st.text(max_size=400))
def test_any_csv_text_loads_or_raises_data_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "t.csv"
        p.write_text("a,b,label\n" + text, encoding="utf-8")
        try:
            build_data(DataConfig(source="table", path=str(p)))
        except DataError:
            pass
