"""Maintainer tools of this checkout (not part of the installed package)."""
