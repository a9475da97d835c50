"""The inspector's VAE round trip: an upload squeezed into the latent and decoded back, with what it cost."""

from __future__ import annotations

from typing import Callable

import gradio as gr

from playground.errors import InvalidRequest
from playground.schema import RoundTripRequest
from playground.settings import Settings
from playground.ui.common import heavy, shows_errors, status_line
from playground.views import RoundTrip


def roundtrip_text(r: RoundTrip, offline: bool = False) -> str:
    c, h, w = r.latent_shape
    H, W = r.original.height, r.original.width
    text = (f"**{W}x{H}x3 = {W * H * 3:,} numbers → {w}x{h}x{c} = {w * h * c:,} numbers: {r.ratio:.0f}x smaller.**  \n"
            f"Reconstruction PSNR: **{r.psnr:.2f} dB** (higher is closer; above ~30 dB differences are hard to see).")
    if offline:
        text += ("  \nThis VAE was trained only on the playground's own world of flat shapes and stick figures: "
                 "anything else, a photo above all, comes back posterised into that world's colours. A VAE trained "
                 "on photos, as Stable Diffusion's is, keeps them far closer.")
    return text


def build(roundtrip: Callable[..., RoundTrip], settings: Settings, offline: bool = False,
          model_box: gr.Dropdown | None = None) -> None:
    """Lay out the round trip inside the current layout and wire its event (the `vae_roundtrip` endpoint)."""
    gr.Markdown("Upload a picture and watch the VAE squeeze it into 4 channels at 1/8 the width and height, then "
                "decode it back. The diffusion model only ever works on that small latent.")
    with gr.Row():
        image_box = gr.Image(label="Your image", type="filepath", sources=["upload", "clipboard"], height=300)
        with gr.Column():
            trip = gr.Button("Encode and decode", variant="primary")
            status = status_line()
            info = gr.Markdown()
    with gr.Row():
        original = gr.Image(label="Original (fitted to a multiple of 8)", format="png", interactive=False, height=300)
        reconstruction = gr.Image(label="Reconstruction (decoded latent)", format="png", interactive=False, height=300)
    channels = gr.Gallery(label="The latent: 4 channels", columns=4, height="auto", object_fit="contain",
                          format="png", allow_preview=False)

    @shows_errors
    def on_roundtrip(upload, model=""):
        # preprocess=False: the raw upload, so a corrupt file reaches the Engine, whose error names it
        path = upload.get("path") if isinstance(upload, dict) else upload
        if not path:
            raise InvalidRequest("Upload an image first")
        r = roundtrip(RoundTripRequest(path, model or ""))
        return r.original, r.reconstruction, [(im, f"channel {k}") for k, im in enumerate(r.channels)], \
            roundtrip_text(r, offline)

    # progress and errors on the status line: the last round trip stays in view, with its figures
    inputs = [image_box] if model_box is None else [image_box, model_box]
    heavy(trip.click, on_roundtrip, inputs, [original, reconstruction, channels, info], settings,
          api_name="vae_roundtrip", preprocess=False, show_progress_on=status)
