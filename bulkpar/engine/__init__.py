"""The engine: runs any operation's chunks on an executor and folds the results.

``contracts`` defines what crosses its boundaries (the job protocol, targets,
run options); ``runner`` schedules; ``executors`` makes the pools;
``worker`` runs a chunk in a transaction with retries; ``checkpoint`` journals
committed chunks; ``transient`` decides which errors are retried. No operation
is special-cased here.
"""
