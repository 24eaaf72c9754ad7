"""Test package: a regular package, so `tests.serving` cannot be shadowed by a `tests` package that some
dependency installs into site-packages (a namespace package loses to any regular one on sys.path)."""
