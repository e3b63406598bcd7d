"""``python -m laserkit`` runs the CLI."""

from .cli import main

main()
