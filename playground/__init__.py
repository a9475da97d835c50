"""Diffusion Playground: see how latent diffusion works while you use it."""
