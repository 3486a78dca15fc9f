"""``python -m bulkpar``: the same as the ``bulkpar`` command."""

from bulkpar.cli.app import main

if __name__ == "__main__":
    main()
