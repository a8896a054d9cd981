"""Shared test builders, one module per concept, so that no test file imports another (see test_test_hygiene.py)."""
