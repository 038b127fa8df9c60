"""``python -m vidshard``: the command line."""

from vidshard.cli.app import main

if __name__ == "__main__":  # spawned workers import this module too: they must not run it
    main()
