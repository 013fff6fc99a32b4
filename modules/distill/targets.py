"""The teacher's scores as a `teacher_logits` column of tokenized rows: computed once, in chunks (any number of
rows), and cached by `datasets` beside the tokenized data under a key of those rows and the teacher file, so a second
`fit` on the same data and teacher reads them back without running the teacher."""

import hashlib
import json
from collections.abc import Callable, Sequence

import numpy as np
import torch
from datasets import Dataset

from modules import compat
from modules.data.collate import logits_by_length
from modules.distill.teacher import LoadedTeacher, TeacherFile, load_teacher
from modules.speedups import apply_for_inference, without_full_mask

CHUNK_ROWS = 2048  # tokenized rows per `map` batch: the texts of one chunk are scored in length-sorted batches


def scores(
    teacher: LoadedTeacher, texts: Sequence[str], pairs: Sequence[str] | None, batch_size: int, device: torch.device
) -> np.ndarray:
    """The teacher's logits (rows x its labels, float32) for `texts` (and their pairs), in input order; scored in
    batches of similar length so that little padding is computed."""

    def forward(batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = without_full_mask({k: torch.from_numpy(v).to(device) for k, v in batch.items()})
        return teacher.model(**inputs).logits.float().cpu().numpy()

    with torch.inference_mode():
        return logits_by_length(
            teacher.tokenizer, texts, pairs, forward, teacher.model.config.num_labels, batch_size,
            teacher.max_length, teacher.input_names,
        )  # fmt: skip


def with_teacher_logits(
    tokenized: Dataset,
    raw: Dataset,
    offset: int,
    teacher: TeacherFile,
    columns: list[int],
    text_columns: Sequence[str],
    batch_size: int,
    device: torch.device,
    loaded: Callable[[], LoadedTeacher],
) -> Dataset:
    """`tokenized` with a `teacher_logits` column: the teacher's logits of each row's text (`raw[index - offset]`;
    windows of one document share its scores), in the data's label order (`columns`).

    `loaded` returns the teacher, loaded on first call: a cached column never loads it.
    """
    rows = [compat.dataset_fingerprint(tokenized), compat.dataset_fingerprint(raw), offset]
    key = hashlib.sha256(json.dumps([*rows, teacher.identity, columns, list(text_columns)]).encode()).hexdigest()[:32]

    def add(batch: dict) -> dict:
        documents = np.asarray(batch["index"]) - offset
        unique, inverse = np.unique(documents, return_inverse=True)
        rows = raw.select(unique)
        pairs = rows[text_columns[1]][:] if len(text_columns) > 1 else None
        logits = scores(loaded(), rows[text_columns[0]][:], pairs, batch_size, device)
        return {"teacher_logits": logits[inverse][:, columns]}

    return tokenized.map(add, batched=True, batch_size=CHUNK_ROWS, new_fingerprint=key, desc="Teacher scoring rows")


def teacher_loader(teacher: TeacherFile, device: torch.device) -> Callable[[], LoadedTeacher]:
    """A function that loads the teacher on its first call (on `device`, with the inference speedups) and returns
    the same one after."""
    held: list[LoadedTeacher] = []

    def get() -> LoadedTeacher:
        if not held:
            loaded = load_teacher(teacher)
            loaded.model.to(device)
            apply_for_inference(loaded.model, device.type, compiled=False)
            held.append(loaded)
        return held[0]

    return get
