"""TransformerModule: a Hugging Face sequence classifier with the loss, metrics and schedule of a careful fine-tune.

The data reaches the model at one point: `setup` reads the datamodule's frozen `DataContract`
(`trainer.datamodule.contract`, modules/data/contract.py) and hands it to `connect`; everything after (the labels,
the tokenizer's pad id, class weights, windowed evaluation, the prediction writer and the export) reads
`self.data_contract`.
"""

from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torchmetrics import MeanMetric
from transformers import PreTrainedModel

from modules import compat
from modules.data.contract import DataContract
from modules.data.labels import PROBLEM_TYPES, TASKS, LabelSpec
from modules.decisions.record import CHECKPOINT_KEY, Decisions
from modules.distill.loss import DistillLoss
from modules.errors import HFLightningError
from modules.model import build
from modules.model.evaluation import EvaluationSteps
from modules.model.lora import apply_lora, check_lora_args, check_trained_keys, parameter_counts
from modules.model.loss import class_weights, task_loss
from modules.model.metrics import build_metrics, check_monitors
from modules.model.optimization import clear_clip_factor, clip_gradients, configure_adamw
from modules.model.train_loss import TrainLossLog
from modules.runs.record import HF_CONFIG_KEY, RunRecord
from modules.speedups import apply_exact, apply_for_training, without_full_mask


class TransformerModule(EvaluationSteps, LightningModule):
    """Fine-tune a Hugging Face sequence classifier: single-label, multi-label or regression.

    The Hugging Face model is built in `configure_model`, once the data has told the task and the label names, so
    `num_labels`, `id2label` and `label2id` are never typed by the user. Checkpoints carry the model's config, so
    `load_from_checkpoint` rebuilds the model without downloading anything. With LoRA (`lora_r` > 0) checkpoints hold
    only the trained tensors (adapters and head), and reloading takes the frozen rest from `model_name_or_path`.
    """

    def __init__(
        self,
        model_name_or_path: str = "bert-base-uncased",
        num_layers: int | None = None,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        class_weights: Literal["none", "balanced"] | list[float] = "none",
        threshold: float = 0.5,
        compile: bool = False,
        gradient_checkpointing: bool = False,
        fast_dropout: bool = True,
        nonfinite_loss: Literal["stop", "skip"] = "stop",
        lora_r: int = 0,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.1,
        lora_target_modules: list[str] | None = None,
        problem_type: Literal["single_label_classification", "multi_label_classification", "regression"] | None = None,
        label_names: list[str] | None = None,
    ) -> None:
        """
        Args:
            model_name_or_path: Hub model name or local folder (from `save_pretrained`) to fine-tune.
            num_layers: Keep this many of the pretrained model's layers, evenly spaced with the first and the last
                included (DistilBERT's student initialisation: 6 of 12 keeps 0, 2, 4, 7, 9, 11): a smaller, faster
                model whose export is a normal Hugging Face model of that depth. None keeps every layer.
            learning_rate: Peak AdamW learning rate. 2e-5..5e-5 suits base-size encoders; tiny models take more.
            weight_decay: AdamW weight decay, not applied to biases and LayerNorm weights.
            warmup_ratio: Fraction of all optimizer steps spent warming the learning rate up linearly from 0; it then
                decays linearly to 0 at the last step.
            class_weights: Loss weights against class imbalance: `none`; `balanced` (n_rows / (n_classes * rows of
                the class), from the train split; for multi-label, each label's negatives/positives as BCE
                `pos_weight`); or one weight per class. Use `balanced` when a rare class matters (its recall is
                what suffers) and accuracy on the majority may drop a little. Weights apply to the training loss;
                `val_loss`/`test_loss` stay unweighted so runs with and without weights compare.
            threshold: Probability above which a label counts as predicted (multi-label metrics).
            compile: `torch.compile` the model (in place; checkpoint keys stay free of `_orig_mod.`). Meant for
                GPU runs of many steps whose step is host-bound: fewer, fused kernels; length-varying batches trigger
                recompiles first, and compilation takes minutes. On a small CPU it did not pay off; measurements are
                in benchmarks/README.md.
            gradient_checkpointing: Recompute activations in the backward pass: slower steps, much less memory, for
                large models or long inputs.
            fast_dropout: Training on CPU, draw dropout masks four elements per random number and run attention that
                has dropout as two plain products in the autocast dtype (modules/speedups/dropout.py): faster steps
                (benchmarks/README.md). Same dropout rate and expectation (p quantised to 1/65536); other draws than
                torch's. No effect on GPUs (torch's fused dropout is fast there) or with `compile`. False keeps
                torch's dropout and SDPA.
            nonfinite_loss: What a NaN/inf training loss does: `stop` ends the run with an error naming the step
                (the checkpoints on disk stay as they were); `skip` drops that batch's update and goes on
                (single process only: under DDP the other ranks would wait for it).
            lora_r: LoRA rank. 0 fine-tunes every weight. 8 or 16 freezes the model and trains low-rank adapters on
                `lora_target_modules` plus the classification head (the run prints how many parameters); checkpoints
                then hold only those (reloading needs `model_name_or_path`), the Hugging Face export has the adapters
                merged in, and learning rates around 5e-4 suit. Needs `pip install hf-lightning[lora]` (peft).
            lora_alpha: LoRA scale numerator: the adapters' output is scaled by lora_alpha / lora_r (2 x r is common).
            lora_dropout: Dropout on the adapters' input.
            lora_target_modules: Names (or dotted name endings) of the linear layers to adapt, e.g. `[query, value]`.
                None takes peft's default for the architecture (BERT/RoBERTa `query`, `value`; GPT-2 `c_attn`;
                DistilBERT `q_lin`, `v_lin`); after the model is built it holds the names used.
            problem_type: Not a setting: filled in from the data (`--data.task` decides the task) and stored so
                checkpoints reload on their own. Leave it unset (with both it and `label_names` set, data that
                disagrees is refused).
            label_names: Not a setting: filled in from the data's labels and stored so checkpoints and exports keep
                the names. Leave it unset.
        """
        super().__init__()
        check_lora_args(lora_r, lora_alpha, lora_dropout)
        if not 0 < threshold < 1:  # 0 or 1 would predict every label or none: a typo, never a choice
            raise HFLightningError(
                f"--model.threshold must be in (0, 1): a label counts as predicted when its probability is above it; "
                f"got {threshold}."
            )
        build.check_layers(model_name_or_path, num_layers)  # from the config alone, before any data is read
        self.save_hyperparameters()
        self.model: PreTrainedModel | None = None
        self.data_contract: DataContract | None = None  # set by `connect`, from `setup`
        self._input_names: tuple[str, ...] = ()
        # The CLI sets this when `--ckpt_path` will overwrite the weights: then only the architecture is built.
        self.weights_from_checkpoint = False
        self._train_loss = TrainLossLog()
        # Set by `--distill.*` (modules/distill/callback.py) before training: the training loss mixes in the teacher's.
        self.distillation: DistillLoss | None = None
        if lora_r:
            # LoRA checkpoints hold only the trained tensors, so Lightning must not ask for the frozen ones (FSDP loads
            # through its own path); `check_trained_keys` is strict about the trained ones instead.
            self.strict_loading = False

    @property
    def task(self) -> str | None:
        """`single_label`, `multi_label` or `regression` (None until the data or a checkpoint has told)."""
        return TASKS.get(self.hparams.problem_type)

    # --------------------------------------------------------------------------------------------- building
    def connect(self, contract: DataContract | None) -> None:
        """Take what the data tells the model for this stage (None: a datamodule without a contract, so the
        checkpoint's labels and no tokenizer)."""
        self.data_contract = contract

    def label_spec(self) -> LabelSpec:
        """The task and label names: from the data when it has a train split, else from the checkpoint."""
        from_data = self.data_contract.label_spec if self.data_contract else None
        stored = self.task and self.hparams.label_names
        if from_data is not None and stored:
            if (from_data.task, list(from_data.names)) != (self.task, list(self.hparams.label_names)):
                raise HFLightningError(
                    f"the checkpoint was trained for {self.task} with labels {self.hparams.label_names}, "
                    f"but the data gives {from_data.task} with labels {list(from_data.names)}. Use the data it was "
                    "trained on, or start a new fit."
                )
        if from_data is not None:
            return from_data
        if stored:
            return LabelSpec(self.task, tuple(self.hparams.label_names))
        raise HFLightningError("no labels: the data has no train split and no checkpoint gave label names.")

    def setup(self, stage: str) -> None:
        # The one read of the data through the trainer (modules/data/contract.py).
        self.connect(getattr(self.trainer.datamodule, "contract", None))
        spec = self.label_spec()
        self.hparams.problem_type, self.hparams.label_names = PROBLEM_TYPES[spec.task], list(spec.names)
        if stage == "fit":
            check_monitors(self.trainer.callbacks, spec.task)

    def configure_model(self) -> None:
        if compat.attached_trainer(self) is None:
            return  # standalone `load_from_checkpoint`: `on_load_checkpoint` builds the model from its config
        spec = self.label_spec()
        if self.model is None:
            self._set_model(*self._build(spec, from_checkpoint=self.weights_from_checkpoint))
        if not hasattr(self, "val_metrics"):
            self._build_metrics(spec)

    def _build(self, spec: LabelSpec, from_checkpoint: bool) -> tuple[PreTrainedModel, list[str]]:
        """The model, and the names of the modules `from_pretrained` initialized at random."""
        tokenizer = self.data_contract.tokenizer if self.data_contract else None
        # A full checkpoint has every weight: the architecture will do. LoRA checkpoints hold only the trained
        # tensors: the frozen rest comes from the pretrained weights.
        return build.from_name(
            self.hparams.model_name_or_path,
            spec,
            pretrained_weights=not (from_checkpoint and not self.hparams.lora_r),
            pad_token_id=tokenizer.pad_token_id if tokenizer else None,
            num_layers=self.hparams.num_layers,
        )

    def _set_model(self, model: PreTrainedModel, initialized: list[str] | None = None) -> None:
        self._input_names = build.accepted_inputs(model)  # before LoRA wraps it
        if self.hparams.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.hparams.lora_r:
            hp = self.hparams
            model, hp.lora_target_modules = apply_lora(
                model, hp.lora_r, hp.lora_alpha, hp.lora_dropout, hp.lora_target_modules, initialized or ()
            )
        # Counted now: once FSDP has wrapped the model, each process sees only its shard.
        self.parameter_counts = trainable, total = parameter_counts(model)
        if self.hparams.lora_r and rank_zero_only.rank == 0:
            print(f"LoRA: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)")
        apply_exact(model, compiled=self.hparams.compile)
        if self.hparams.compile:
            model.compile()  # in place: parameter names (and checkpoint keys) stay free of `_orig_mod.`
        self.model = model

    def _build_metrics(self, spec: LabelSpec) -> None:
        threshold = self.hparams.threshold
        self.val_metrics = build_metrics(spec.task, spec.num_labels, threshold)
        self.test_metrics = build_metrics(spec.task, spec.num_labels, threshold, per_class=True)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.start_windows()
        fitting = self.trainer.state.fn == "fit"
        weights = None
        if fitting:
            counts = self.data_contract.label_counts if self.data_contract else None
            rows = self.data_contract.train_rows if counts else 0
            weights = class_weights(self.hparams.class_weights, spec, counts, rows)
        self.register_buffer("loss_weights", weights, persistent=False)

    # ---------------------------------------------------------------------------------------------- steps
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of shape (batch, num_labels) from the inputs this model's `forward` accepts."""
        inputs = {k: batch[k] for k in self._input_names if k in batch}
        return self.model(**(inputs if self.training else without_full_mask(inputs))).logits

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, weighted: bool = False) -> torch.Tensor:
        # Class weights shape the training loss only: val/test losses stay comparable across weightings.
        return task_loss(self.task, logits, labels, self.loss_weights if weighted else None)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        logits = self(batch)
        if self.distillation is not None:
            loss = self.distillation(logits, batch, lambda out, labels: self._loss(out, labels, weighted=True))
        else:
            loss = self._loss(logits, batch["labels"], weighted=True)
        if not torch.isfinite(loss):  # one host sync per step; the progress bar reads the loss anyway
            where = f"at step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
            if self.hparams.nonfinite_loss == "skip" and self.trainer.world_size == 1:
                self.print(f"Skipped the update of a non-finite loss ({loss.item()}) {where}.")
                return None
            raise HFLightningError(
                f"non-finite training loss ({loss.item()}) {where}. Lower --model.learning_rate, prefer bf16 to "
                "fp16, or set --model.nonfinite_loss skip to drop such batches."
            )
        self._train_loss.add(self, loss.detach(), batch_idx, len(batch["input_ids"]))
        return loss

    # ------------------------------------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> dict:
        hp = self.hparams
        return configure_adamw(self, hp.learning_rate, hp.weight_decay, hp.warmup_ratio)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().optimizer_step(*args, **kwargs)
        finally:
            clear_clip_factor(self.trainer)

    # -------------------------------------------------------------------------------------- checkpointing
    def trained_keys(self) -> list[str]:
        """State-dict keys of the tensors training updates (all of them without LoRA)."""
        return [name for name, parameter in self.named_parameters() if parameter.requires_grad]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[HF_CONFIG_KEY] = self.model.config.to_dict()  # the schema: modules/runs/record.py
        if self.decisions is not None:  # calibration and thresholds for these weights (modules/decisions)
            checkpoint[CHECKPOINT_KEY] = self.decisions.to_dict()
        if self.hparams.lora_r:  # the frozen base weights are those of model_name_or_path: no need to store them
            trained = set(self.trained_keys())
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trained_r = RunRecord.from_checkpoint(checkpoint).lora_r
        self.decisions = Decisions.from_checkpoint(checkpoint)
        if trained_r != self.hparams.lora_r:  # the CLI takes it from the checkpoint; a hand-built module may not
            raise HFLightningError(
                f"the checkpoint was trained with --model.lora_r {trained_r} but this run sets {self.hparams.lora_r}: "
                "pass the value it was trained with."
            )
        if self.model is None:  # loaded on its own, not by a Trainer that built it in `configure_model`
            self._set_model(
                *build.from_checkpoint(
                    checkpoint, self.hparams.model_name_or_path, self.hparams.lora_r > 0, self.hparams.num_layers
                )
            )
        if self.hparams.lora_r and "state_dict" in checkpoint:  # FSDP has loaded and removed it already
            check_trained_keys(self.trained_keys(), checkpoint["state_dict"])

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False) -> Any:
        if not self.hparams.lora_r:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        # The frozen tensors stay as `model_name_or_path` gave them; strictness applies to the trained ones.
        if strict:
            check_trained_keys(self.trained_keys(), state_dict)
        keys = super().load_state_dict(state_dict, strict=False, assign=assign)
        return keys._replace(missing_keys=[k for k in self.trained_keys() if k not in state_dict])

    def on_train_start(self) -> None:
        trainer = self.trainer
        self._train_loss.start(trainer)
        # CPU training step speedups (GPUs have fused kernels for this work), undone when training ends.
        hp = self.hparams
        self._undo_speedups = apply_for_training(
            self.model, self.device.type, trainer.world_size, hp.fast_dropout, compiled=hp.compile
        )

    def on_train_end(self) -> None:
        undo, self._undo_speedups = getattr(self, "_undo_speedups", None), None
        if undo is not None:
            undo()
