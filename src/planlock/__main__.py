"""``python -m planlock``: the same command line as ``planlock``."""

from planlock.cli import main

if __name__ == "__main__":
    main()
