"""walq benchmark harness (bench-only; not part of the walq package)."""
