"""Tools that make the project's own files (not part of the installed package)."""
