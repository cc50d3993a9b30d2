"""The object pipeline: operator registry, runner, built-in operators, placement.

Built-in operators register through the same public API as plugins (registry.py);
the runner (runner.py) drives every object through its kind's pipeline.
"""
