"""``python -m bulkpar``: the same as the ``bulkpar`` command."""

from bulkpar.cli import main

if __name__ == "__main__":
    main()
