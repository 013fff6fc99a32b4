"""The `check` command: before a long run, whether its data and model load and what it will cost (`command`), the
time and memory measured on a few real steps (`cost`), and the machine: CPU, native precisions, the warning when a
precision would be emulated (`machine`, torch only, so the server uses it too), and that warning at the start of
every run (`precision_guard`).
"""
