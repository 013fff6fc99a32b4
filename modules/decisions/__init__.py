"""Decisions: what turns a trained model's scores into decisions a person can trust. The schema a run records
(`record`: calibration and thresholds, in the checkpoint and the export's config); fitting a temperature or Platt
scaling on validation outputs and folding it into the classifier's last layer (`calibration`); per-label and
target-precision/recall thresholds (`thresholds`); the `--decisions.*` callback that fits them at each validation of
`fit`, or again on other labelled data (`callback`); gathering a stage's outputs across processes (`outputs`);
calling out a model whose predictions collapsed (`collapse`); likely label errors (`label_issues`).
"""
