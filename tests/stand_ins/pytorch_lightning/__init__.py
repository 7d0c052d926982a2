"""A stand-in for the names PyTorch Lightning's checkpoints mention, so that the test fixtures
(tests/real_checkpoints.py) pickle references to the real classes by their real names. It is
only on sys.path while those fixtures are written; nothing in feverdream imports it."""

__version__ = "1.0.8"
