"""i2i: restore and translate photos with GAN models."""

__version__ = "0.1.0"
