"""`python -m minimind_tui` (same as `minimind-tui`)."""

from .cli import main

main()
