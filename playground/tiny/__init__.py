"""The offline model: a small Stable-Diffusion-shaped pipeline that needs no download."""
