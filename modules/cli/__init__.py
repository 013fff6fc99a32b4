"""The command line behind `main.py`: the table of commands (`commands`), the LightningCLI app for fit, validate,
test, predict and check (`app`, with its parser in `parser`), answers given before Lightning is imported
(`fast_path`), the parser of the other commands (`plain_parser`), and the one did-you-mean every parser uses
(`suggest`).
"""
