"""BEDROT's experiment specs, shipped as package data of ``bedrot_plugins.experiments``.

The ``*.toml`` files are the specs; this file only makes the folder a package, so that an
installed bedrot-lab finds them (``bedrot-lab init`` copies them into a new lake's
``experiments/``, and ``bedrot-lab run NAME.toml`` falls back on them).
"""
