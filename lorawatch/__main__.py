"""``python -m lorawatch`` is the ``lorawatch`` command."""

from lorawatch.cli import main

main()
