"""The models the engine optimises through (VQGAN and CLIP) and the 3D camera's depth model:
their registry, cache and downloads.

Importing this package is cheap (no torch); `registry`, `download` and the CLI's `models` verbs
need torch only when a model is built or loaded.
"""
