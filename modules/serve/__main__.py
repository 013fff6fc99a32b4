"""`python -m modules.serve`: an alias of `python main.py serve`."""

from modules.serve.command import main

if __name__ == "__main__":
    main()
