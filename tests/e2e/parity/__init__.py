"""Parity tests: what tmon records against each framework's own file logger (see harness.py)."""
