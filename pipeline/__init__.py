"""feverdream: a YAML storyboard in, a vertical VQGAN+CLIP video for TikTok out."""

__version__ = "0.1.0"
