"""Accuracy of an exported Hugging Face folder on a dataset split, with plain transformers (no Lightning).

    python benchmarks/evaluate_export.py logs/bert/version_0/hf_model ../shared/data/rotten_tomatoes --bf16

Checks that the export is the model `python main.py test --ckpt_path best` measured: the two accuracies agree.
"""

import argparse
import contextlib

import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def evaluate(folder: str, dataset: str, split: str, text_column: str, max_length: int, bf16: bool) -> float:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    data = load_dataset(dataset)[split]
    names = data.features["label"].names if hasattr(data.features["label"], "names") else None
    texts, labels = data[text_column][:], data["label"][:]
    correct = 0
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for start in range(0, len(texts), 64):
            batch = tokenizer(
                texts[start : start + 64], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            predicted = model(**batch).logits.argmax(-1).tolist()
            for p, label in zip(predicted, labels[start : start + 64]):
                # Compare by name: the export's id2label must carry the dataset's label names.
                gold = names[label] if names else str(label)
                correct += model.config.id2label[p] == gold
    return correct / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--bf16", action="store_true", help="evaluate under bf16 autocast, as a bf16-mixed run does")
    args = parser.parse_args()
    accuracy = evaluate(args.folder, args.dataset, args.split, args.text_column, args.max_length, args.bf16)
    print(f"{args.split} accuracy of {args.folder}: {accuracy:.4f}")


if __name__ == "__main__":
    main()
