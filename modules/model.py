"""TransformerModule: a Hugging Face sequence classifier with the loss, metrics and schedule of a careful fine-tune."""

import inspect
import random
import re
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.nn.modules.module import _IncompatibleKeys
from torchmetrics import MeanMetric
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from modules.dropout import use_lane_dropout
from modules.embedding_grad import known_norm, use_kept_embedding_grad
from modules.errors import HFLightningError
from modules.first_token import first_token_last_layer
from modules.fused_projections import fuse_qkv_projections
from modules.hub import check_model_source
from modules.labels import PROBLEM_TYPES, TASKS, LabelSpec
from modules.lora import apply_lora, check_lora_args, initialized_modules, merge, parameter_counts
from modules.metrics import build_metrics, check_monitors

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TransformerModule(LightningModule):
    """Fine-tune a Hugging Face sequence classifier: single-label, multi-label or regression.

    The Hugging Face model is built in `configure_model`, once the data has told the task and the label names, so
    `num_labels`, `id2label` and `label2id` are never typed by the user. Checkpoints carry the model's config, so
    `load_from_checkpoint` rebuilds the model without downloading anything. With LoRA (`lora_r` > 0) checkpoints hold
    only the trained tensors (adapters and head), and reloading takes the frozen rest from `model_name_or_path`.
    """

    def __init__(
        self,
        model_name_or_path: str = "bert-base-uncased",
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
                GPU runs of many steps whose step is host-bound (bert-base at batch 32 kept an H100 ~1% busy): fewer,
                fused kernels; length-varying batches trigger recompiles first. Not yet measured on a GPU here. On a
                2-core CPU it did not pay off (MiniLM, bf16: 72 vs 89 samples/s, after ~3 minutes of compilation).
            gradient_checkpointing: Recompute activations in the backward pass: ~30% slower steps, much less
                memory, for large models or long inputs.
            fast_dropout: Training on CPU, draw dropout masks four elements per random number and run attention that
                has dropout as two plain products in the autocast dtype (modules/dropout.py): steps ~1.2x faster
                (MiniLM, bf16, 2 cores). Same dropout rate and expectation (p quantised to 1/65536); other draws than
                torch's. No effect on GPUs (torch's fused dropout is fast there) or with `compile`. False keeps
                torch's dropout and SDPA.
            nonfinite_loss: What a NaN/inf training loss does: `stop` ends the run with an error naming the step
                (the checkpoints on disk stay as they were); `skip` drops that batch's update and goes on
                (single process only: under DDP the other ranks would wait for it).
            lora_r: LoRA rank. 0 fine-tunes every weight. 8 or 16 freezes the model and trains low-rank adapters on
                `lora_target_modules` plus the classification head (~1% of a base model's parameters); checkpoints
                then hold only those (reloading needs `model_name_or_path`), the Hugging Face export has the adapters
                merged in, and learning rates around 5e-4 suit. Needs `pip install hf-lightning[lora]` (peft).
            lora_alpha: LoRA scale numerator: the adapters' output is scaled by lora_alpha / lora_r (2 x r is common).
            lora_dropout: Dropout on the adapters' input.
            lora_target_modules: Names (or dotted name endings) of the linear layers to adapt, e.g. `[query, value]`.
                None takes peft's default for the architecture (BERT/RoBERTa `query`, `value`; GPT-2 `c_attn`;
                DistilBERT `q_lin`, `v_lin`); after the model is built it holds the names used.
            problem_type: Set from the data (`--data.task`); stored so checkpoints reload on their own.
            label_names: Set from the data; stored so checkpoints and exports keep the label names.
        """
        super().__init__()
        check_lora_args(lora_r, lora_alpha, lora_dropout)
        self.save_hyperparameters()
        self.model: PreTrainedModel | None = None
        self._input_names: tuple[str, ...] = ()
        # The CLI sets this when `--ckpt_path` will overwrite the weights: then only the architecture is built.
        self.weights_from_checkpoint = False
        # train_loss logging (`_log_train_loss`): on_train_start sets how often something reads it.
        self._train_loss_window: tuple[torch.Tensor, int] | None = None
        self._train_loss_bar_rate, self._train_loss_every_step = 0, True
        self._grad_scale_optimizer: torch.optim.Optimizer | None = None  # holds this step's clip factor (CPU)
        if lora_r:
            # LoRA checkpoints hold only the trained tensors, so Lightning must not ask for the frozen ones (FSDP loads
            # through its own path); `_check_trained_keys` is strict about the trained ones instead.
            self.strict_loading = False

    @property
    def task(self) -> str | None:
        """`single_label`, `multi_label` or `regression` (None until the data or a checkpoint has told)."""
        return TASKS.get(self.hparams.problem_type)

    # --------------------------------------------------------------------------------------------- building
    def label_spec(self) -> LabelSpec:
        """The task and label names: from the data when it has a train split, else from the checkpoint."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        from_data = getattr(datamodule, "label_spec", None)
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
        spec = self.label_spec()
        self.hparams.problem_type, self.hparams.label_names = PROBLEM_TYPES[spec.task], list(spec.names)
        if stage == "fit":
            check_monitors(self.trainer.callbacks, spec.task)

    def configure_model(self) -> None:
        if self._trainer is None:
            return  # standalone `load_from_checkpoint`: `on_load_checkpoint` builds the model from its config
        spec = self.label_spec()
        if self.model is None:
            self._set_model(*self._build(spec, from_checkpoint=self.weights_from_checkpoint))
        if not hasattr(self, "val_metrics"):
            self._build_metrics(spec)

    def _build(self, spec: LabelSpec, from_checkpoint: bool) -> tuple[PreTrainedModel, list[str]]:
        """The model, and the names of the modules `from_pretrained` initialized at random."""
        if spec.task == "single_label" and spec.num_labels < 2:
            raise HFLightningError(f"single-label training needs at least 2 labels; the train split has {spec.names}.")
        name = self.hparams.model_name_or_path
        check_model_source(name, "--model.model_name_or_path")
        labels = {
            "num_labels": spec.num_labels,
            "id2label": dict(enumerate(spec.names)),
            "label2id": {n: i for i, n in enumerate(spec.names)},
            "problem_type": PROBLEM_TYPES[spec.task],
        }
        if from_checkpoint and not self.hparams.lora_r:  # the checkpoint has every weight: the architecture will do
            model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(name, **labels))
            initialized = []
        else:  # LoRA checkpoints hold only the trained tensors: the frozen rest comes from the pretrained weights
            model, initialized = self._pretrained(**labels)
        model.train()  # from_pretrained returns eval mode, and Lightning does not switch it back: dropout would be off
        tokenizer = getattr(self.trainer.datamodule, "tokenizer", None)
        if model.config.pad_token_id is None:
            # Decoder-only classifiers find each row's last real token through the pad id.
            model.config.pad_token_id = tokenizer.pad_token_id if tokenizer else model.config.eos_token_id
        return model, initialized

    def _pretrained(self, **config_values) -> tuple[PreTrainedModel, list[str]]:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            self.hparams.model_name_or_path, ignore_mismatched_sizes=True, output_loading_info=True, **config_values
        )
        return model, initialized_modules(info)

    def _set_model(self, model: PreTrainedModel, initialized: list[str] | None = None) -> None:
        accepted = inspect.signature(model.forward).parameters  # of the Hugging Face model: peft's takes **kwargs
        self._input_names = tuple(k for k in _MODEL_INPUTS if k in accepted)
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
        if not self.hparams.compile:  # compile traces the model as Hugging Face wrote it
            first_token_last_layer(model)  # exact: the head reads position 0 only
        else:
            model.compile()  # in place: parameter names (and checkpoint keys) stay free of `_orig_mod.`
        self.model = model

    def _build_metrics(self, spec: LabelSpec) -> None:
        threshold = self.hparams.threshold
        self.val_metrics = build_metrics(spec.task, spec.num_labels, threshold)
        self.test_metrics = build_metrics(spec.task, spec.num_labels, threshold, per_class=True)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        fitting = self.trainer.state.fn == "fit"
        self.register_buffer("loss_weights", self._loss_weights(spec) if fitting else None, persistent=False)

    def _loss_weights(self, spec: LabelSpec) -> torch.Tensor | None:
        weights = self.hparams.class_weights
        if weights == "none":
            return None
        if spec.task == "regression":
            raise HFLightningError("--model.class_weights applies to classification; set it to none for regression.")
        if weights == "balanced":
            counts = getattr(self.trainer.datamodule, "label_counts", None) if self._trainer else None
            if not counts:
                raise HFLightningError("--model.class_weights balanced needs a train split to count labels in.")
            counts = torch.tensor(counts).clamp(min=1)
            if spec.task == "multi_label":
                total = len(self.trainer.datamodule.datasets["train"])
                return (total - counts).clamp(min=1) / counts  # BCE pos_weight: negatives per positive
            return counts.sum() / (len(counts) * counts)
        if len(weights) != spec.num_labels:
            raise HFLightningError(
                f"--model.class_weights has {len(weights)} values but there are {spec.num_labels} labels "
                f"{list(spec.names)}."
            )
        return torch.tensor(weights, dtype=torch.float)

    # ---------------------------------------------------------------------------------------------- steps
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of shape (batch, num_labels) from the inputs this model's `forward` accepts."""
        return self.model(**{k: batch[k] for k in self._input_names if k in batch}).logits

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, weighted: bool = False) -> torch.Tensor:
        # Class weights shape the training loss only: val/test losses stay comparable across weightings.
        logits = logits.float()
        weights = self.loss_weights if weighted else None
        task = self.task
        if task == "regression":
            return F.mse_loss(logits.squeeze(-1), labels)
        if task == "multi_label":
            return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=weights)
        return F.cross_entropy(logits, labels, weight=weights)

    def _outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities (single-label softmax, multi-label sigmoid) or the predicted value (regression)."""
        logits = logits.float()
        task = self.task
        if task == "regression":
            return logits.squeeze(-1)
        return torch.sigmoid(logits) if task == "multi_label" else torch.softmax(logits, dim=-1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        loss = self._loss(self(batch), batch["labels"], weighted=True)
        if not torch.isfinite(loss):  # one host sync per step; the progress bar reads the loss anyway
            where = f"at step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
            if self.hparams.nonfinite_loss == "skip" and self.trainer.world_size == 1:
                self.print(f"Skipped the update of a non-finite loss ({loss.item()}) {where}.")
                return None
            raise HFLightningError(
                f"non-finite training loss ({loss.item()}) {where}. Lower --model.learning_rate, prefer bf16 to "
                "fp16, or set --model.nonfinite_loss skip to drop such batches."
            )
        self._log_train_loss(loss.detach(), batch_idx, len(batch["input_ids"]))
        return loss

    def _log_train_loss(self, loss: torch.Tensor, batch_idx: int, batch_size: int) -> None:
        """Log `train_loss` on the batches something reads it, as the mean over the batches since its last log.

        Lightning's `self.log` costs about 1 ms of host time per call (it walks its result record each time), time a
        GPU step, host-bound at fine-tuning sizes, waits for. Loggers read the value every `log_every_n_steps` steps
        and a progress bar every `refresh_rate` batches; in between, the losses add up on the device (no sync). The
        value logged is the mean over that window, like the Hugging Face Trainer's `loss`: one batch's loss where it
        is read every batch (a bar that refreshes each batch, a callback that monitors it, `fast_dev_run`).
        """
        window = self._train_loss_window
        self._train_loss_window = (window[0] + loss, window[1] + 1) if window else (loss, 1)
        trainer = self.trainer
        step = trainer.global_step + 1  # this batch's optimizer step, once it is done
        stepping = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        due = (
            self._train_loss_every_step
            or trainer.is_last_batch
            or 0 < trainer.max_steps <= step
            or (stepping and trainer.log_every_n_steps > 0 and step % trainer.log_every_n_steps == 0)
            or (self._train_loss_bar_rate > 0 and (batch_idx + 1) % self._train_loss_bar_rate == 0)
        )
        if due:
            total, count = self._train_loss_window
            self._train_loss_window = None
            self.log("train_loss", total / count, prog_bar=True, batch_size=batch_size)

    def _eval_step(self, batch: dict[str, torch.Tensor], loss_metric: MeanMetric, metrics) -> None:
        logits = self(batch)
        loss_metric.update(self._loss(logits, batch["labels"]), weight=len(batch["input_ids"]))
        metrics.update(self._outputs(logits), batch["labels"].long() if self.task == "multi_label" else batch["labels"])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss, self.val_metrics)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_loss, self.test_metrics)

    def _log_epoch(self, prefix: str, loss_metric: MeanMetric, metrics) -> None:
        # torchmetrics has already reduced across processes (every row counted once), so all ranks agree.
        values = {f"{prefix}_loss": loss_metric.compute()}
        for name, value in metrics.compute().items():
            if value.ndim == 2:  # the confusion matrix: for the test report (modules/report.py), not a scalar to log
                setattr(self, f"{prefix}_confusion_matrix", value.cpu())
            elif value.ndim == 0:
                values[f"{prefix}_{name}"] = value
            else:  # per-class vector: one scalar per label name
                for label, v in zip(self.hparams.label_names, value):
                    values[f"{prefix}_{name}_{re.sub(r'[^0-9A-Za-z]+', '_', str(label))}"] = v
        self.log_dict(values, prog_bar=prefix == "val", sync_dist=True)  # equal on all ranks: a no-op mean
        loss_metric.reset()
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_loss, self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_loss, self.test_metrics)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"index": batch["index"].cpu(), "outputs": self._outputs(self(batch)).cpu()}

    # ------------------------------------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> dict:
        decay, no_decay = [], []
        for parameter in self.parameters():
            if parameter.requires_grad:
                # Biases and LayerNorm weights are the 1-D parameters; decaying them hurts fine-tuning.
                (no_decay if parameter.ndim < 2 else decay).append(parameter)
        groups = [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        # Fused AdamW is the fastest (CPU has no foreach kernels: the fallback is a per-tensor loop). With an fp16
        # loss scaler it would unscale inside its step, after clipping, so that case keeps the foreach path.
        fused = next(self.parameters()).device.type in ("cuda", "cpu") and not self._loss_scaled()
        optimizer = torch.optim.AdamW(
            groups, lr=self.hparams.learning_rate, fused=fused, foreach=None if fused else True
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if self.trainer.ckpt_path:
            # The estimate built the training loader before the checkpoint's loop state was restored, and Lightning
            # restores a loader's position only when it builds the loader: let the fit loop build it again.
            self.trainer.fit_loop._combined_loader = None
        warmup = int(total * self.hparams.warmup_ratio)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _loss_scaled(self) -> bool:
        return getattr(self.trainer.precision_plugin, "scaler", None) is not None

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        from torch.distributed.fsdp import FullyShardedDataParallel

        by_norm = gradient_clip_val and gradient_clip_algorithm in (None, "norm")
        root = self.trainer.strategy.model
        if by_norm and isinstance(root, FullyShardedDataParallel):
            # Each process holds a shard of each gradient: FSDP's own clipping reduces the norm across them (Lightning's
            # FSDP precision plugin refuses to clip by norm; torch.nn.utils would clip each shard by its own norm).
            root.clip_grad_norm_(gradient_clip_val)
        elif by_norm and not self._loss_scaled():
            # Lightning's mixed-precision plugin refuses to clip for fused optimizers. Without a loss scaler (fp32,
            # bf16) the gradients are the true ones, so clipping here is exact, and stays on the device (no sync).
            self._clip_grad_norm(optimizer, gradient_clip_val)
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def _clip_grad_norm(self, optimizer: torch.optim.Optimizer, max_norm: float) -> None:
        """`clip_grad_norm_`; on CPU with fused AdamW the optimizer applies the clip factor in its own pass.

        Fused AdamW divides each gradient by its `grad_scale` (the hook GradScaler uses) and writes it back, so the
        step and the gradients left after it are those of clipping first (to within a rounding), without a pass of
        its own over all the gradients: on MiniLM-L6 (22.7M parameters, 2 CPU cores) that pass costs ~6 ms a step.
        On GPUs the multiply is one cheap foreach kernel and stays.
        """
        get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
        if get_total_norm and self.device.type == "cpu" and optimizer.defaults.get("fused"):
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            known = [known_norm(g) for g in grads]  # the kept word-embedding gradient's, taken from its touched rows
            norm = get_total_norm([g for g, n in zip(grads, known) if n is None], foreach=True)
            if any(n is not None for n in known):
                norm = torch.linalg.vector_norm(torch.stack([norm, *(n for n in known if n is not None)]))
            # 1 / clip_grad_norm_'s factor, in float32 (the kernel's type for it, whatever the parameters' dtype)
            optimizer.grad_scale = ((norm.float() + 1e-6) / max_norm).clamp(min=1.0)
            self._grad_scale_optimizer = optimizer
        else:
            torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm, foreach=True)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().optimizer_step(*args, **kwargs)
        finally:  # the clip factor of this step only (see `_clip_grad_norm`)
            optimizer, self._grad_scale_optimizer = self._grad_scale_optimizer, None
            if optimizer is not None:
                optimizer.grad_scale = None

    # -------------------------------------------------------------------------------------- checkpointing
    def trained_keys(self) -> list[str]:
        """State-dict keys of the tensors training updates (all of them without LoRA)."""
        return [name for name, parameter in self.named_parameters() if parameter.requires_grad]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["hf_config"] = self.model.config.to_dict()
        if self.hparams.lora_r:  # the frozen base weights are those of model_name_or_path: no need to store them
            trained = set(self.trained_keys())
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}
        # Lightning keeps no RNG state; without it a resumed run draws other dropout masks than an uninterrupted one.
        checkpoint["rng_states"] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trained_r = checkpoint.get("hyper_parameters", {}).get("lora_r", 0)
        if trained_r != self.hparams.lora_r:  # the CLI takes it from the checkpoint; a hand-built module may not
            raise HFLightningError(
                f"the checkpoint was trained with --model.lora_r {trained_r} but this run sets {self.hparams.lora_r}: "
                "pass the value it was trained with."
            )
        if self.model is None and self.hparams.lora_r:  # standalone load: frozen base from the pretrained weights
            check_model_source(self.hparams.model_name_or_path, "--model.model_name_or_path")
            self._set_model(*self._pretrained(config=_config_from_dict(checkpoint["hf_config"])))
        elif self.model is None:
            self._set_model(model_from_config(checkpoint["hf_config"]))
        if self.hparams.lora_r and "state_dict" in checkpoint:  # FSDP has loaded and removed it already
            self._check_trained_keys(checkpoint["state_dict"])
        # Applied right before the first resumed step, not now, so nothing run in between (sanity check, user
        # hooks) shifts it; that also holds for a checkpoint saved mid-epoch.
        self._resume_rng_states = checkpoint.get("rng_states")

    def _check_trained_keys(self, state_dict: dict) -> None:
        """A LoRA checkpoint must hold exactly the trained tensors: a missing adapter would silently stay untrained."""
        trained = self.trained_keys()
        missing = [k for k in trained if k not in state_dict]
        unexpected = [k for k in state_dict if k not in set(trained)]
        if trained and (missing or unexpected):
            raise HFLightningError(
                f"the checkpoint does not fit this LoRA model: it lacks {len(missing)} trained tensors {missing[:3]} "
                f"and has {len(unexpected)} unknown ones {unexpected[:3]}. Use the --model.model_name_or_path and "
                "--model.lora_* values it was trained with."
            )

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False) -> _IncompatibleKeys:
        if not self.hparams.lora_r:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        # The frozen tensors stay as `model_name_or_path` gave them; strictness applies to the trained ones.
        if strict:
            self._check_trained_keys(state_dict)
        keys = super().load_state_dict(state_dict, strict=False, assign=assign)
        return keys._replace(missing_keys=[k for k in self.trained_keys() if k not in state_dict])

    def on_train_start(self) -> None:
        trainer = self.trainer
        bar = trainer.progress_bar_callback
        self._train_loss_window = None
        self._train_loss_bar_rate = getattr(bar, "refresh_rate", 0) if bar is not None and bar.is_enabled else 0
        monitored = any(getattr(callback, "monitor", None) == "train_loss" for callback in trainer.callbacks)
        self._train_loss_every_step = monitored or bool(trainer.fast_dev_run)
        # CPU training step speedups (GPUs have fused kernels for this work), undone when training ends.
        hp, undo = self.hparams, []
        if self.device.type == "cpu" and not hp.compile:
            if hp.fast_dropout:
                undo.append(use_lane_dropout(self.model))
            if self.trainer.world_size == 1:
                undo.append(use_kept_embedding_grad(self.model))
            undo.append(fuse_qkv_projections(self.model))
        self._undo_speedups = [u for u in undo if u is not None]

    def on_train_end(self) -> None:
        undo, self._undo_speedups = getattr(self, "_undo_speedups", []), []
        for u in reversed(undo):
            u()

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        states, self._resume_rng_states = getattr(self, "_resume_rng_states", None), None
        if states:
            torch.set_rng_state(states["torch"])
            random.setstate(_as_tuple(states["python"]))
            if "cuda" in states and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuple(value: object) -> object:
    """`random.setstate` wants the nested tuples `getstate` gave; a checkpoint round trip may turn them into lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _config_from_dict(config: dict) -> PretrainedConfig:
    values = dict(config)
    return CONFIG_MAPPING[values.pop("model_type")].from_dict(values)


def model_from_config(config: dict) -> PreTrainedModel:
    """An untrained model of the architecture and labels a checkpoint's `hf_config` describes (no download)."""
    return AutoModelForSequenceClassification.from_config(_config_from_dict(config))


def trained_model(checkpoint: dict) -> PreTrainedModel:
    """The Hugging Face model a loaded checkpoint holds, as a plain model: LoRA adapters are merged in."""
    accepted = inspect.signature(TransformerModule.__init__).parameters  # LightningCLI also stores `_instantiator`
    module = TransformerModule(**{k: v for k, v in checkpoint["hyper_parameters"].items() if k in accepted})
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return merge(module.model) if module.hparams.lora_r else module.model
