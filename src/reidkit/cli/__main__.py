"""``python -m reidkit.cli`` (e.g. under ``torchrun``): the ``reidkit`` command line."""

from reidkit.cli import main

main()
