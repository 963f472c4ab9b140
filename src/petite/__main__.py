"""``python -m petite`` runs the command line."""

from petite.cli import main

main()
