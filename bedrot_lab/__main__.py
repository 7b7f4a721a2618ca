"""``python -m bedrot_lab``."""

from bedrot_lab.cli import main

main()
