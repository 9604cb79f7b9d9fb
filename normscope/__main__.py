"""`python -m normscope` runs the CLI."""

from .cli import main

main()
