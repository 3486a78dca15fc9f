"""The benchmark app: one table shaped like a typical production table."""
