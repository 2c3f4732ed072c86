"""Celery wiring for walq's fleet mode: ``celery -A workers worker|beat|flower``.

The app is built from walq's configuration (``$WALQ_CONFIG`` or ./walq.toml);
the tasks live in workers.tasks and only call walq.fleet.
"""

from __future__ import annotations

from workers.app import app, refuse_flower_without_auth

refuse_flower_without_auth()

__all__ = ["app"]
