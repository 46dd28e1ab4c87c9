"""``python -m ds4router`` is the ``ds4router`` command."""

from ds4router.cli import main

main()
