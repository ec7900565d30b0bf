"""A small model package whose budgets pytest-netbudget enforces (see ../pyproject.toml)."""
