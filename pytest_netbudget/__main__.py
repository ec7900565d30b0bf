"""``python -m pytest_netbudget`` is the ``netbudget`` command."""

from .cli import main

raise SystemExit(main())
