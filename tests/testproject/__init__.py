"""Minimal Django project used by the bulkpar test suite."""
