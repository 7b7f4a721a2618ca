"""Notebooks and scripts as experiments: ``bedrot-lab run NOTEBOOK.ipynb`` executes a notebook
with papermill, ``bedrot-lab run SCRIPT.py`` a script, each as one tracked MLflow run; inside
them, :func:`notebook_context` is the run's context. Registered as the built-in plugin
``notebooks`` (:mod:`.hooks`)."""
