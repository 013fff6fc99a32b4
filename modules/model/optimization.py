"""The optimizer of a careful fine-tune: AdamW without decay on biases and LayerNorm weights, linear warmup then
linear decay per optimizer step, and gradient clipping that works with fused AdamW, mixed precision and FSDP."""

from collections.abc import Callable, Iterable

import torch
from lightning.pytorch import LightningModule, Trainer

from modules import compat
from modules.speedups import known_norm


def parameter_groups(parameters: Iterable[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices decay, 1-D parameters (biases, LayerNorm weights) don't; frozen ones are left out."""
    decay, no_decay = [], []
    for parameter in parameters:
        if parameter.requires_grad:
            # Biases and LayerNorm weights are the 1-D parameters; decaying them hurts fine-tuning.
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_then_linear_decay(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LambdaLR factor: from 1/(warmup+1) up to 1 over `warmup_steps`, then down to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def configure_adamw(module: LightningModule, learning_rate: float, weight_decay: float, warmup_ratio: float) -> dict:
    """`configure_optimizers`' answer: AdamW over `parameter_groups` with the warmup-then-decay schedule per step."""
    trainer = module.trainer
    # Fused AdamW is the fastest (CPU has no foreach kernels: the fallback is a per-tensor loop). With an fp16 loss
    # scaler it would unscale inside its step, after clipping, so that case keeps the foreach path.
    fused = next(module.parameters()).device.type in ("cuda", "cpu") and not loss_scaled(trainer)
    optimizer = torch.optim.AdamW(
        parameter_groups(module.parameters(), weight_decay),
        lr=learning_rate,
        fused=fused,
        foreach=None if fused else True,
    )
    total = max(1, int(trainer.estimated_stepping_batches))
    if trainer.ckpt_path:
        # The estimate built the training loader before the checkpoint's loop state was restored, and Lightning
        # restores a loader's position only when it builds the loader: let the fit loop build it again.
        compat.rebuild_train_loader(trainer)
    schedule = warmup_then_linear_decay(total, int(total * warmup_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def loss_scaled(trainer: Trainer) -> bool:
    """Whether an fp16 loss scaler is active (gradients are then scaled until it unscales them)."""
    return getattr(trainer.precision_plugin, "scaler", None) is not None


def clip_gradients(
    module: LightningModule,
    optimizer: torch.optim.Optimizer,
    gradient_clip_val: float | None,
    gradient_clip_algorithm: str | None,
) -> None:
    """`configure_gradient_clipping`: clip where the clipping can be exact and cheap for this strategy and precision."""
    by_norm = gradient_clip_val and gradient_clip_algorithm in (None, "norm")
    root = module.trainer.strategy.model
    from torch.distributed.fsdp import FullyShardedDataParallel

    if by_norm and isinstance(root, FullyShardedDataParallel):
        # Each process holds a shard of each gradient: FSDP's own clipping reduces the norm across them (Lightning's
        # FSDP precision plugin refuses to clip by norm; torch.nn.utils would clip each shard by its own norm).
        root.clip_grad_norm_(gradient_clip_val)
    elif by_norm and not loss_scaled(module.trainer):
        # Lightning's mixed-precision plugin refuses to clip for fused optimizers. Without a loss scaler (fp32, bf16)
        # the gradients are the true ones, so clipping here is exact, and stays on the device (no sync).
        _clip_grad_norm(module, optimizer, gradient_clip_val)
    else:
        module.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)


def _clip_grad_norm(module: LightningModule, optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    """`clip_grad_norm_`; on CPU with fused AdamW the optimizer applies the clip factor in its own pass.

    Fused AdamW divides each gradient by its `grad_scale` (the hook GradScaler uses) and writes it back, so the step
    and the gradients left after it are those of clipping first (to within a rounding), without a pass of its own over
    all the gradients: on MiniLM-L6 (22.7M parameters, 2 CPU cores) that pass costs ~6 ms a step. On GPUs the
    multiply is one cheap foreach kernel and stays. `clear_clip_factor` removes the factor after the step.
    """
    if _clip_in_fused_step(module, optimizer):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        known = [known_norm(g) for g in grads]  # the kept word-embedding gradient's, taken from its touched rows
        norm = torch.nn.utils.get_total_norm([g for g, n in zip(grads, known) if n is None], foreach=True)
        if any(n is not None for n in known):
            norm = torch.linalg.vector_norm(torch.stack([norm, *(n for n in known if n is not None)]))
        # 1 / clip_grad_norm_'s factor, in float32 (the kernel's type for it, whatever the parameters' dtype)
        optimizer.grad_scale = ((norm.float() + 1e-6) / max_norm).clamp(min=1.0)
    else:
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm, foreach=True)


def _clip_in_fused_step(module: LightningModule, optimizer: torch.optim.Optimizer) -> bool:
    return module.device.type == "cpu" and bool(optimizer.defaults.get("fused"))


def clear_clip_factor(trainer: Trainer) -> None:
    """Drop the clip factor `_clip_grad_norm` left on the optimizers: it belongs to one step only."""
    for optimizer in trainer.optimizers:
        if getattr(optimizer, "grad_scale", None) is not None:
            optimizer.grad_scale = None
