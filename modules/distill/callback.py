"""`Distill`, the `--distill.*` flags: before `fit` trains, the teacher scores the train rows (and an unlabelled
file's) once, and the model's training loss becomes the mix `DistillLoss` computes."""

from pathlib import Path

import torch
from datasets import concatenate_datasets
from lightning.pytorch import Callback, LightningModule, Trainer

from modules.distill.augment import augmented
from modules.distill.loss import DistillLoss
from modules.distill.targets import teacher_loader, with_teacher_logits
from modules.distill.teacher import TeacherFile, read_teacher_file
from modules.errors import HFLightningError


class Distill(Callback):
    """Knowledge distillation: the model being fitted (the student) learns from a trained teacher's scores.

    Typical use: a 3-layer student of the teacher's own base model (`--model.num_layers 3`) runs about twice as fast
    and keeps most of the teacher's accuracy; an unlabelled file of in-domain texts gives it more to learn from.

    Args:
        teacher: A run's checkpoint (`.ckpt`) or Hugging Face export folder (`hf_model/`) trained on the same labels
            (any architecture and tokenizer: it reads the texts with its own). None: no distillation.
        alpha: Weight of the soft loss against the teacher; the gold labels' loss gets 1 - alpha. 1 learns from the
            teacher alone.
        temperature: Softens both models' scores before they are compared (single- and multi-label): above 1 the
            student also learns how the teacher ranks the wrong classes. The soft loss is scaled by its square.
        unlabeled_file: A file of texts without labels (CSV, JSON lines, Parquet with the `--data.text_column`, or
            plain text, one per line) for the teacher to label: its rows join the train split with the soft loss only.
            Read and scored in chunks, cached on disk: it may be larger than memory.
        augment: Perturbed copies of each train row for the teacher to label (Tang et al., 2019): words masked
            (the student tokenizer's mask token) at 10%, and for single texts a quarter of the copies cut to a random
            run of 1-5 words. They join the train split with the soft loss only: each epoch is 1 + augment times
            longer, and small students gain most from it. 0: none.
        augment_seed: Seed of the perturbations (the copies, and the teacher's cached scores of them, are reused
            while it stays the same).
        batch_size: Rows per teacher batch while it scores the texts.
    """

    def __init__(
        self,
        teacher: str | None = None,
        alpha: float = 0.5,
        temperature: float = 2.0,
        unlabeled_file: str | None = None,
        augment: int = 0,
        augment_seed: int = 0,
        batch_size: int = 64,
    ) -> None:
        if not 0 <= alpha <= 1:
            raise HFLightningError(f"--distill.alpha must be in [0, 1] (the soft loss's weight); got {alpha}.")
        if not temperature > 0:
            raise HFLightningError(
                f"--distill.temperature must be above 0 (1 leaves the scores as they are); got {temperature}."
            )
        if batch_size < 1:
            raise HFLightningError(f"--distill.batch_size must be at least 1; got {batch_size}.")
        if unlabeled_file is not None and teacher is None:
            raise HFLightningError("--distill.unlabeled_file needs --distill.teacher: the teacher labels its rows.")
        if augment < 0 or (augment and teacher is None):
            raise HFLightningError(
                f"--distill.augment {augment}: a count of copies (0 or more) for --distill.teacher to label."
            )
        self.augment, self.augment_seed = augment, augment_seed
        self.teacher_path, self.alpha, self.temperature, self.batch_size = teacher, alpha, temperature, batch_size
        self.unlabeled_file = unlabeled_file
        self.teacher: TeacherFile | None = None  # read by `check_files`: `test` of a student needs no teacher

    def check_files(self) -> None:
        """Before `fit` reads any data (the CLI calls it): the teacher recognised from its files alone, the
        unlabelled file present. A wrong path or file is a one-line error at once."""
        if self.teacher_path is None:
            return
        if self.unlabeled_file is not None and not Path(self.unlabeled_file).expanduser().is_file():
            raise HFLightningError(f"--distill.unlabeled_file {self.unlabeled_file} does not exist or is not a file.")
        self.teacher = read_teacher_file(self.teacher_path)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or self.teacher_path is None:
            return
        if self.teacher is None:  # a Trainer driven without the CLI
            self.check_files()
        datamodule = trainer.datamodule
        contract = getattr(datamodule, "contract", None)
        if contract is None or contract.label_spec is None or "train" not in getattr(datamodule, "datasets", {}):
            raise HFLightningError(
                "--distill.teacher needs the train split in Arrow files (hf-lightning's data module, "
                "--data.streaming false)."
            )
        columns = self.teacher.columns_for(contract.label_spec)  # before the teacher is loaded
        # The first process scores and fills the cache; the others then read it.
        if trainer.is_global_zero:
            self._score(trainer, datamodule, columns)
        trainer.strategy.barrier("distill-teacher-scores")
        if not trainer.is_global_zero:
            self._score(trainer, datamodule, columns)
        spec = contract.label_spec
        labeled = len(contract.raw_splits["train"])
        pl_module.distillation = DistillLoss(
            spec.task, self.alpha, self.temperature, labeled, unlabeled=bool(self.unlabeled_file or self.augment)
        )

    def _score(self, trainer: Trainer, datamodule, columns: list[int]) -> None:
        contract = datamodule.contract
        device = trainer.strategy.root_device
        device = device if device.type == "cuda" else torch.device("cpu")
        loaded = teacher_loader(self.teacher, device)
        texts = contract.text_columns

        def scored(tokenized, raw, offset):
            return with_teacher_logits(
                tokenized, raw, offset, self.teacher, columns, texts, self.batch_size, device, loaded
            )

        offset = len(contract.raw_splits["train"])
        parts = [scored(datamodule.datasets["train"], contract.raw_splits["train"], 0)]
        note = f"Distilling from {self.teacher.path} (alpha {self.alpha}, temperature {self.temperature})"
        extras = []
        if self.augment:
            mask = contract.tokenizer.mask_token if contract.tokenizer is not None else None
            copies = augmented(contract.raw_splits["train"], texts, self.augment, self.augment_seed, mask)
            extras.append((copies, "perturbed copies of the train rows"))
        if self.unlabeled_file is not None:
            extras.append((self.unlabeled_file, f"unlabeled rows from {self.unlabeled_file}"))
        for source, what in extras:
            raw, tokenized = datamodule.unlabeled_rows(source, offset)
            parts.append(scored(tokenized, raw, offset))
            offset += len(raw)
            note += f", with {len(raw):,} {what}"
        datamodule.replace_train(concatenate_datasets(parts), note if trainer.is_global_zero else None)
