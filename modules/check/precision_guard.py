"""The Lightning callback that warns once at the start of a run whose 16-bit precision would be emulated here."""

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from modules.check import machine


class PrecisionGuard(Callback):
    """One warning at the start of fit/validate/test/predict when the precision asked for is emulated here
    (`machine.precision_warning`)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        message = machine.precision_warning(str(trainer.precision), trainer.strategy.root_device.type)
        if message:
            rank_zero_warn(message)
