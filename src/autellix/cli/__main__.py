"""`python -m autellix.cli`: the `autellix` command without the installed script."""

from autellix.cli import main

if __name__ == "__main__":
    main()
