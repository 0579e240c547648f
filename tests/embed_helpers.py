"""A tiny random sentence-transformers model built from a config, offline, for the embedding tests.

It has the layout of all-MiniLM-L6-v2 (BERT + mean pooling + normalisation, a WordPiece tokenizer)
at width 16, so every code path of the real teacher runs in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a an of to and in is was it that for on with as by at from this be are or not have has had "
    "cat cats dog dogs bird fish tree trees house car road river city town sun moon star rain snow "
    "red green blue big small old new good bad fast slow happy sad hot cold "
    "run runs walk walks eat eats see sees play plays read reads write writes sleep sleeps "
    "python code data model file test text word sentence search phone keyboard music food water"
).split()

SENTENCES = [
    "the cat sleeps on the old car",
    "a dog runs in the park",
    "the bird sings in the tree",
    "fish swim in the cold river",
    "the sun is hot and the moon is cold",
    "rain falls on the small town",
    "she reads a good book",
    "he writes python code for the model",
    "the phone keyboard predicts the next word",
    "search the text for a sentence",
    "happy dogs play with the red ball",
    "the city has a big house on the road",
    "snow covers the green trees",
    "music and food make people happy",
    "the new car is fast",
    "an old cat walks slowly",
    "water is good for the trees",
    "the model reads the data file",
    "a small bird eats in the garden",
    "the star is bright tonight",
]


def write_vocab(path: Path) -> Path:
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(".,!?'-")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *WORDS]
    seen: list[str] = []
    for t in tokens:
        if t not in seen:
            seen.append(t)
    path.write_text("\n".join(seen) + "\n", encoding="utf-8")
    return path


def make_tiny_sentence_model(path: Path, *, layers: int = 2, hidden: int = 16, heads: int = 2, seed: int = 0,
                             dropout: float = 0.1) -> Path:
    """Save a random BERT (``layers`` x ``hidden``) with mean pooling and normalisation as a
    sentence-transformers folder at ``path``; returns ``path``."""
    import json

    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(write_vocab(path / "vocab.txt").read_text().split())}
    rust = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    rust.normalizer = normalizers.BertNormalizer(lowercase=True)
    rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    rust.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )  # fmt: skip
    rust.decoder = decoders.WordPiece()
    tok = BertTokenizerFast(
        tokenizer_object=rust, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", do_lower_case=True,
    )  # fmt: skip
    assert tok.vocab_size == len(vocab)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=64, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )  # fmt: skip
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    # the sentence-transformers layout, as all-MiniLM-L6-v2 ships it
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32, "do_lower_case": False}))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
    }))  # fmt: skip
    return path
