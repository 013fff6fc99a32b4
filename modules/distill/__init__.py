"""Distillation: `--distill.*` trains the model being fitted (the student, often made small with
`--model.num_layers`) on the temperature-softened scores of a trained teacher as well as the gold labels.

- `teacher.py`: the teacher, a run's checkpoint or Hugging Face export, its labels checked against the data's.
- `targets.py`: the teacher's scores as a `teacher_logits` column of the tokenized train rows, computed once and
  cached beside them by `datasets`, for the train split and for an unlabelled file.
- `augment.py`: perturbed copies of the train rows (`--distill.augment`), more texts for the teacher to label.
- `loss.py`: the soft loss of each task and its mix with the gold loss.
- `callback.py`: `Distill`, the flags, wiring the above into `fit`.
"""
