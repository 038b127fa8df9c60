"""``python -m vidshard``: the command line."""

from vidshard.cli.app import main

if __name__ == "__main__":
    main()
