"""`python -m minimind ...` (and `torchrun ... -m minimind train ...`)."""

from .cli import main

main()
