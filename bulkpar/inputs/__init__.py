"""Inputs: records from files, stdin and iterables, their conversion, key partitions,
and the parsing of ``--filter``/``--set`` strings into typed values."""
