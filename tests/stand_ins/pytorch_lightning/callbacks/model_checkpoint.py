class ModelCheckpoint:
    """pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint: in a Lightning 1.0.8
    checkpoint the class object itself is the key of its state in `callbacks`."""
