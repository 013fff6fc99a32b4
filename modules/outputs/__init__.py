"""Outputs: what a run leaves behind. The Hugging Face export (`export`, also `main.py export`)
and its model card (`model_card`), ONNX and int8 files (`onnx`), predictions files (`predictions`), one reading of
a prediction that predict rows and serve answers share (`answers`), the test report (`report`; its numbers
`breakdown`, wrong rows `errors`, figures `figures`), and the run's saved config and metrics files (`run_files`).
"""
