"""Outputs: what a run leaves behind. The Hugging Face export (`export`, also `main.py export`)
and its model card (`model_card`), predictions files (`predictions`), the test report (`report`), and the run's
saved config and metrics files (`run_files`).
"""
