"""BEDROT's own analyses and ETL experiments, installed as the package ``bedrot_plugins``.

This folder is also the repository's lake's ``plugins/`` folder. Each module is a plugin of
its own, registered through its own ``bedrot_lab`` entry point (pyproject.toml), so that
``bedrot-lab plugins list`` names each analysis; files starting with ``_`` are no plugins.
"""
