"""Alembic migrations of the prediction store (a package only so that env.py ships in wheels)."""
