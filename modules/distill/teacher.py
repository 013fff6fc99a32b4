"""The teacher: a run's checkpoint (`.ckpt`) or Hugging Face export folder, recognised and checked against the
data's labels from its config alone (no weights read), then loaded for its pass over the texts.

A checkpoint is exported to a temporary folder first (modules/outputs/export.py), so both kinds are read one way,
calibration folded into the head as every reader of the export sees it.
"""

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modules.data.contract import clamp_max_length
from modules.data.labels import LabelSpec
from modules.data.tasks import TASKS, task_of
from modules.errors import HFLightningError

WHAT = "a run's checkpoint (.ckpt) or its Hugging Face export folder (logs/<name>/version_N/hf_model)"


@dataclass(frozen=True)
class TeacherFile:
    """What a teacher file says of itself, read without its weights.

    Attributes:
        path: The checkpoint or folder, as given.
        task: `single_label`, `multi_label` or `regression`.
        labels: Its label names, in the order of its outputs.
        identity: Changes whenever the file does (path, size and modification time of its weights): part of the
            cache key of its scores.
    """

    path: Path
    task: str
    labels: tuple[str, ...]
    identity: str

    def columns_for(self, spec: LabelSpec) -> list[int]:
        """The teacher's output column of each of the data's labels, in the data's order; a one-line error when the
        teacher was trained for another task or other labels."""
        if self.task != spec.task:
            raise HFLightningError(
                f"--distill.teacher {self.path} was trained for {self.task}, but the data gives {spec.task}: "
                "distil from a teacher trained on this kind of data."
            )
        if spec.task == "regression":
            return [0]
        if sorted(self.labels) != sorted(spec.names):
            missing, extra = set(spec.names) - set(self.labels), set(self.labels) - set(spec.names)
            raise HFLightningError(
                f"--distill.teacher {self.path} predicts the labels {list(self.labels)}, but the data's are "
                f"{list(spec.names)} (missing from the teacher: {sorted(missing)}; not in the data: {sorted(extra)}). "
                "Distil from a teacher trained on these labels."
            )
        return [self.labels.index(name) for name in spec.names]


def read_teacher_file(path: str | Path) -> TeacherFile:
    """Recognise `path` as a checkpoint or an export and read its task and labels; a one-line error otherwise."""
    path = Path(path).expanduser()
    if not path.exists():
        raise HFLightningError(f"--distill.teacher {path} does not exist: pass {WHAT}.")
    if path.is_file():
        if path.suffix != ".ckpt":
            raise HFLightningError(f"--distill.teacher {path} is not a checkpoint or an export: pass {WHAT}.")
        from modules.runs.paths import checkpoint_settings

        try:
            record = checkpoint_settings(path)  # memory-mapped: its weights are not read
        except HFLightningError:
            raise HFLightningError(f"--distill.teacher {path} is corrupt or not a checkpoint: pass {WHAT}.") from None
        if record.hf_config is None or not record.problem_type:
            raise HFLightningError(f"--distill.teacher {path} was not written by `fit`: pass {WHAT}.")
        labels = tuple(record.hyper_parameters.get("label_names") or ())
        return TeacherFile(path, TASKS[record.problem_type], labels, _identity(path, [path]))
    config_file = path / "config.json"
    if not config_file.is_file():
        raise HFLightningError(f"--distill.teacher {path} is a folder without config.json: pass {WHAT}.")
    config = json.loads(config_file.read_text())
    if not any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        raise HFLightningError(
            f"--distill.teacher {path} is not a sequence classifier ({config.get('architectures')}): pass {WHAT}."
        )
    num_labels = len(config.get("id2label") or {}) or config.get("num_labels", 2)
    id2label = config.get("id2label") or {str(i): f"LABEL_{i}" for i in range(num_labels)}
    labels = tuple(id2label[key] for key in sorted(id2label, key=int))
    weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    task = task_of(config.get("problem_type"), num_labels)
    return TeacherFile(path, task, labels, _identity(path, weights + [config_file]))


def _identity(path: Path, files: list[Path]) -> str:
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps([str(path.resolve()), stats]).encode()).hexdigest()[:16]


@dataclass
class LoadedTeacher:
    """The teacher's model (eval mode, fp32, CPU or the given device), its tokenizer and the longest input it reads."""

    model: object
    tokenizer: object
    max_length: int
    input_names: tuple[str, ...]


def load_teacher(teacher: TeacherFile) -> LoadedTeacher:
    """The teacher's model and tokenizer; a checkpoint goes through the export first (a temporary folder)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from modules.model.build import accepted_inputs

    folder = teacher.path
    if folder.is_file():
        from modules.outputs.export import export_checkpoint

        folder = export_checkpoint(folder, tempfile.mkdtemp(prefix="hf-lightning-teacher-"))
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    longest = clamp_max_length(tokenizer.model_max_length, model.config)
    return LoadedTeacher(model, tokenizer, longest, accepted_inputs(model))
