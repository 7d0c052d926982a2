"""The shapes world's recipe: the world (world.py), the training of its VQGAN and CLIP
(train.py), and the build that writes their model files (build.py). The package ships the
reference build's files and never imports this."""
