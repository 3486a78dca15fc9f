"""The Django project used only by the bulkpar benchmarks (``bench/run.py``)."""
