"""Loom load-test harness."""
