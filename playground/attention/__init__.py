"""Which word paints where: whose tokens are followed (`sources`, plain data) and the recording of their
attention inside the denoiser (`capture`, torch)."""
