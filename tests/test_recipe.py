"""Recipe loading, validation (every problem at once), overrides, the documented example."""

from __future__ import annotations

import pytest
import yaml

from distill.errors import RecipeError
from distill.core.recipes import load_recipe, validate_recipe
from distill.core.task import TASKS
from distill.recipe import apply_overrides
from distill.tasks.classification.recipe import Recipe

from .conftest import tiny_recipe


def test_defaults_are_valid() -> None:
    r = validate_recipe({})
    assert isinstance(r, Recipe)
    assert [t.loss for t in r.distill] == ["kd", "ce"]
    assert r.run_dir.as_posix() == "runs/run"


def test_example_is_valid_yaml_with_comments() -> None:
    text = TASKS["classification"].example_yaml()
    assert text.count("#") > 30
    raw = yaml.safe_load(text)
    r = validate_recipe(raw)
    assert r.data.source == "fashion_mnist"
    assert r.teacher.arch == "cnn"


def test_every_problem_is_reported_at_once_with_field_paths() -> None:
    raw = tiny_recipe(train={"epochs": 0, "batch_size": -4, "optimiser": {}})
    raw["data"]["source"] = "imagenet"
    raw["distill"][0]["temperature"] = -1
    with pytest.raises(RecipeError) as exc:
        validate_recipe(raw)
    msg = str(exc.value)
    assert "train.epochs must be > 0 (got 0)" in msg
    assert "train.batch_size must be > 0 (got -4)" in msg
    assert "train.optimiser: unknown key (did you mean 'optimizer'?)" in msg
    assert "data.source must be one of" in msg and "'imagenet'" in msg
    assert "distill[0]" in msg and "temperature must be > 0.0 (got -1)" in msg
    assert len(exc.value.problems) == 5
    assert "Fix:" in msg


def test_wrong_types_are_reported() -> None:
    with pytest.raises(RecipeError) as exc:
        validate_recipe({"train": {"epochs": "many"}, "eval": {"baseline": "perhaps"}})
    msg = str(exc.value)
    assert "train.epochs" in msg and "'many'" in msg
    assert "eval.baseline" in msg


def test_unknown_loss_suggests_the_closest() -> None:
    with pytest.raises(RecipeError, match=r"unknown loss 'kdd'; did you mean 'kd'\?"):
        validate_recipe({"distill": [{"loss": "kdd"}]})


def test_unknown_loss_parameter() -> None:
    with pytest.raises(RecipeError, match="has no parameter 'tau'"):
        validate_recipe({"distill": [{"loss": "kd", "tau": 2}]})


def test_unknown_builder_parameter() -> None:
    with pytest.raises(RecipeError, match="student.*builder 'mlp' has no parameter 'width'"):
        validate_recipe({"student": {"arch": "mlp", "params": {"width": 3}}})


def test_teacher_arch_and_factory_conflict() -> None:
    with pytest.raises(RecipeError, match="either `arch` or `factory`"):
        validate_recipe({"teacher": {"arch": "cnn", "factory": "a.b:c"}})
    r = validate_recipe({"teacher": {"factory": "a.b:c"}})
    assert r.teacher.arch is None


def test_overrides_set_nested_fields_and_list_items() -> None:
    raw = apply_overrides(tiny_recipe(), ["train.epochs=3", "distill.0.temperature=1.5", "student.params.hidden=[4, 4]"])
    r = validate_recipe(raw)
    assert r.train.epochs == 3
    assert r.distill[0].params["temperature"] == 1.5
    assert r.student.params["hidden"] == [4, 4]


def test_override_of_default_loss_list() -> None:
    r = load_recipe(raw={}, overrides=["distill.0.temperature=3"])
    assert r.distill[0].params["temperature"] == 3


def test_bad_overrides_are_reported() -> None:
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(RecipeError, match="not an index"):
        apply_overrides({"distill": [{}]}, ["distill.5.weight=1"])
    with pytest.raises(RecipeError, match="unknown key"):
        load_recipe(raw={}, overrides=["train.epocs=3"])


def test_overrides_never_mutate_the_input() -> None:
    raw = tiny_recipe()
    before = yaml.safe_dump(raw)
    apply_overrides(raw, ["train.epochs=9"])
    assert yaml.safe_dump(raw) == before


def test_file_errors(tmp_path) -> None:
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(listy)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match="UTF-8"):
        load_recipe(latin)


def test_yaml_is_loaded_safely(tmp_path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(evil)


def test_resolved_recipe_round_trips() -> None:
    r = validate_recipe(tiny_recipe())
    again = validate_recipe(yaml.safe_load(r.to_yaml()))
    assert again.to_dict() == r.to_dict()


@pytest.mark.parametrize("task", ["classification", "embedding", "causal_lm"])
def test_field_reference_of_every_task_is_generated_from_its_schema(task: str) -> None:
    """The docs site's recipe reference is `TASKS[task].fields_markdown()` at build time: every field of the
    schema, nested ones by their dotted path, each with its description."""
    table = TASKS[task].fields_markdown()
    schema = TASKS[task].recipe_class()
    for name, field in schema.model_fields.items():
        assert f"| `{name}` |" in table, name
        assert (field.description or "") in table
    assert table.startswith("| field | default | meaning |")


def test_augment_accepts_booleans_and_modes() -> None:
    assert validate_recipe({"train": {"augment": True}}).train.augment == "flip+shift"
    assert validate_recipe({"train": {"augment": False}}).train.augment == "none"
    assert validate_recipe({"train": {"augment": "flip"}}).train.augment == "flip"
    with pytest.raises(RecipeError, match="train.augment must be one of"):
        validate_recipe({"train": {"augment": "rotate"}})


def test_shipped_recipes_are_valid() -> None:
    from importlib import resources

    folder = resources.files("distill") / "recipes"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    assert {"demo_digits.yaml", "demo_fashion_mnist.yaml", "fashion_mnist.yaml", "embeddings_wordnet.yaml"} <= set(names)
    for name in names:
        load_recipe(str(folder / name))


def test_a_table_teacher_left_at_the_default_builder_is_an_mlp() -> None:
    """The default torch teacher is a CNN (for images); on a table, where a CNN cannot read the rows, it is an MLP;
    an arch the recipe names is kept."""
    table = {"source": "table", "path": "t.csv", "label_column": "y"}
    assert Recipe(**{"data": table}).teacher.arch == "mlp"
    assert Recipe(**{"data": table, "teacher": {"arch": "cnn"}}).teacher.arch == "cnn"
    assert Recipe(**{"data": {"source": "digits"}}).teacher.arch == "cnn"
    assert Recipe(**{"data": table, "teacher": {"kind": "sklearn", "path": "m.skops"}}).teacher.arch is None
