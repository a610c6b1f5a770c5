"""``python -m hwnas`` is the ``hwnas`` command."""

from hwnas.cli import main

if __name__ == "__main__":
    main()
