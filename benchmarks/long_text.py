"""Long documents: test accuracy of `truncate` vs `chunk` on generated reviews whose sentiment word sits only past
`max_length` tokens. Prints both accuracies; chance is 0.5.

    PYTHONPATH=. python benchmarks/long_text.py

Trains the tiny demo BERT (modules/data/demo.py) with a plain loop, so it measures the windowing and the
per-document aggregation (modules/data/long_text.py), not the CLI wiring.
"""

import argparse
import random
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from modules.data.demo import NEGATIVE, NEUTRAL, POSITIVE, write_tiny_bert
from modules.data.long_text import aggregate_windows, encode_windows


def documents(n: int, seed: int, filler: int) -> tuple[list[str], list[int]]:
    """`n` balanced documents: `filler` neutral words, then the one sentiment word among 4 more neutral ones."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        tail = [rng.choice(NEUTRAL) for _ in range(4)]
        tail.insert(rng.randrange(5), rng.choice(POSITIVE if label else NEGATIVE))
        texts.append(" ".join([rng.choice(NEUTRAL) for _ in range(filler)] + tail))
        labels.append(label)
    return texts, labels


def _pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    return ids, (ids != 0).long()


def run(mode: str, model_dir: Path, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    train_texts, train_labels = documents(args.train, seed=1, filler=args.filler)
    test_texts, test_labels = documents(args.test, seed=2, filler=args.filler)
    stride = args.stride if mode == "chunk" else 0

    def encode(texts: list[str]) -> dict:
        if mode == "chunk":
            return encode_windows(tokenizer, texts, args.max_length, stride)
        encoded = tokenizer(texts, truncation=True, max_length=args.max_length)
        return {"input_ids": encoded["input_ids"], "document": list(range(len(texts)))}

    train = encode(train_texts)
    window_labels = [train_labels[d] for d in train["document"]]  # every window carries its document's label
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(args.epochs):
        order = torch.randperm(len(window_labels), generator=generator).tolist()
        for start in range(0, len(order), args.batch_size):
            batch = order[start : start + args.batch_size]
            ids, mask = _pad([train["input_ids"][i] for i in batch])
            loss = model(
                input_ids=ids, attention_mask=mask, labels=torch.tensor([window_labels[i] for i in batch])
            ).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    model.eval()
    test = encode(test_texts)
    with torch.no_grad():
        ids, mask = _pad(test["input_ids"])
        logits = model(input_ids=ids, attention_mask=mask).logits
    per_document = aggregate_windows(logits, torch.tensor(test["document"]))
    assert per_document.shape[0] == len(test_labels)  # one prediction per document, however many windows
    return float((per_document.argmax(-1) == torch.tensor(test_labels)).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max_length", type=int, default=16)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--filler", type=int, default=30, help="neutral words before the sentiment word's 5")
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model_dir = write_tiny_bert(Path(folder) / "tiny-bert")
        for mode in ("truncate", "chunk"):
            print(f"{mode}: test accuracy {run(mode, model_dir, args):.3f} (per document, {args.test} documents)")


if __name__ == "__main__":
    main()
