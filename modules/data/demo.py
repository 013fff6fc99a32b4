"""An offline stand-in for the Hub: a tiny BERT and a learnable review dataset, built locally.

`python main.py demo demo_data` writes `demo_data/model` (a 2-layer, hidden-32 BERT with its WordPiece vocab) and
`demo_data/reviews` (a folder in Hub layout, `neg`/`pos` ClassLabel), which `make demo` fine-tunes in seconds on a
CPU (README.md, "Set up"). The tests build the same things in a temporary folder.
"""

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from datasets import ClassLabel, Dataset, Features, Value
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from modules.cli.plain_parser import PlainParser
from modules.console.quiet import plain_output

POSITIVE = ["great", "wonderful", "moving", "brilliant", "charming", "superb", "funny", "delightful"]
NEGATIVE = ["dull", "awful", "boring", "clumsy", "tedious", "bland", "messy", "lifeless"]
NEUTRAL = (
    "the a this film movie story plot cast acting director script scenes music ending it was is felt quite very "
    "and but with of in at its rather long short old new second first"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocabulary() -> list[str]:
    """Every word the generated data uses, plus BERT's special tokens and the digits (for numeric fixtures)."""
    words = sorted(set(POSITIVE + NEGATIVE + NEUTRAL + [str(d) for d in range(10)]))
    return SPECIAL + words


def review(rng: random.Random, label: int) -> str:
    """A filler sentence of 3-40 words with one or two sentiment words of the label's polarity."""
    words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 40))]
    for _ in range(rng.randint(1, 2)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
    return " ".join(words)


def reviews(n: int, seed: int) -> dict[str, list]:
    """`n` balanced rows of `text` and `label` (0 = neg, 1 = pos)."""
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    rng.shuffle(labels)
    return {"text": [review(rng, label) for label in labels], "label": labels}


def long_reviews(n: int, seed: int, filler: int = 30) -> dict[str, list]:
    """`n` balanced long rows: `filler` neutral words, then the one sentiment word among 4 more neutral ones, so the
    label's cue lies past the first `filler` tokens (the `--data.long_text` benchmark and test)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        tail = [rng.choice(NEUTRAL) for _ in range(4)]
        tail.insert(rng.randrange(5), rng.choice(POSITIVE if label else NEGATIVE))
        texts.append(" ".join([rng.choice(NEUTRAL) for _ in range(filler)] + tail))
        labels.append(label)
    return {"text": texts, "label": labels}


def write_reviews(
    folder: Path, sizes: dict[str, int] | None = None, make: Callable[[int, int], dict[str, list]] = reviews
) -> Path:
    """A dataset folder in Hub layout (`data/<split>-00000-of-00001.parquet`) with a `neg`/`pos` ClassLabel, its rows
    from `make(rows, seed)`."""
    sizes = sizes or {"train": 2000, "validation": 300, "test": 300}
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for seed, (split, n) in enumerate(sizes.items()):
        Dataset.from_dict(make(n, seed), features=features).to_parquet(
            folder / "data" / f"{split}-00000-of-00001.parquet"
        )
    return folder


def write_tiny_bert(folder: Path, hidden_size: int = 32, num_layers: int = 2, seed: int = 0) -> Path:
    """A randomly initialised BERT sequence classifier and its tokenizer, saved as `from_pretrained` expects.

    The initialisation is seeded, so every build of the demo (and every test session) starts from the same weights.
    """
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = {word: i for i, word in enumerate(vocabulary())}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=128)
    config = BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=128,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main(args: list[str] | None = None) -> None:
    parser = PlainParser("demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "output_dir", type=Path, nargs="?", default=Path("demo_data"), help="where to write (default: demo_data)"
    )
    parsed = parser.parse_args(args)
    if not sys.stderr.isatty():
        plain_output()  # `make demo > log`: no progress bars redrawn with carriage returns in the file
    model = write_tiny_bert(parsed.output_dir / "model")
    data = write_reviews(parsed.output_dir / "reviews")
    print(f"Wrote a tiny BERT to {model} and a review dataset to {data}")


if __name__ == "__main__":
    main()
