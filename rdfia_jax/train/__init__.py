"""Shared training infrastructure: the generic loop and orbax checkpoints (GAN, cGAN, DANN)."""
