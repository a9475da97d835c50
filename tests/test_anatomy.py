"""Model anatomy: the families' published parameter counts from their configs on the meta device, the loaded
model's own, and the tab's table and chart."""

from __future__ import annotations

import gradio as gr
import pytest

from playground import parts
from playground.engine import Engine
from playground.ui import anatomy as anatomy_tab

from conftest import tiny_settings

# published sizes (millions of parameters), and how close the configs must come
PUBLISHED = {
    ("SD 1.5", "denoiser: U-Net"): (859.5, 0.1),
    ("SDXL", "denoiser: U-Net"): (2567.0, 1.0),
    ("SD 1.5", "text encoder: CLIP ViT-L/14"): (123.1, 0.1),
    ("SDXL", "text encoder: CLIP ViT-L/14"): (123.1, 0.1),
    ("SDXL", "text encoder 2: OpenCLIP ViT-bigG/14"): (694.7, 0.1),
    ("SD3 Medium", "denoiser: MMDiT transformer"): (2000.0, 50.0),  # "about 2B"
    ("SD3 Medium", "text encoder 3: T5-XXL (encoder)"): (4760.0, 10.0),  # "about 4.76B"
    ("SD3 Medium", "VAE"): (83.8, 0.1),
}


@pytest.fixture(scope="module")
def families():
    return parts.families()


def test_the_families_have_their_published_sizes(families):
    assert list(families) == ["SD 1.5", "SDXL", "SD3 Medium"]
    for (family, part), (millions, tolerance) in PUBLISHED.items():
        found = {p.name: p.params for p in families[family].parts}[part]
        assert abs(found / 1e6 - millions) <= tolerance, (family, part, found)
    sd15, xl, sd3 = families.values()
    assert (sd15.latent, xl.latent, sd3.latent) == ((4, 64, 64), (4, 128, 128), (16, 128, 128))
    assert (sd15.ratio, xl.ratio, sd3.ratio) == (48, 48, 12)
    assert xl.text == ("CLIP ViT-L/14: 768-d, 77 tokens", "OpenCLIP ViT-bigG/14: 1280-d, 77 tokens")
    assert [p.group for p in sd3.parts].count("text encoders") == 3 and 7.6e9 < sd3.params < 7.8e9
    assert parts.families() is families  # counted once


def test_the_loaded_model_is_counted_from_its_own_modules(tiny_model, tiny_dir):
    from diffusers import ControlNetModel

    engine = Engine(tiny_model, tiny_settings(tiny_dir))
    pipe = tiny_model.pipe
    a = engine.anatomy()
    parts = {p.name: p.params for p in a.parts}
    assert parts["denoiser: UNet2DConditionModel"] == sum(p.numel() for p in pipe.unet.parameters())
    assert parts["VAE"] == sum(p.numel() for p in pipe.vae.parameters())
    assert a.params == sum(p.numel() for m in (pipe.text_encoder, pipe.unet, pipe.vae) for p in m.parameters())
    assert a.latent == (4, 8, 8) and a.ratio == 48 and a.native_size == 64
    assert a.text == (f"CLIPTextModel: {pipe.text_encoder.config.hidden_size}-d, 77 tokens",)
    assert a.prediction_type == "epsilon" and "1000 steps" in a.schedule
    assert a.schedule.endswith("the last keeps 6.8% of the image")  # SD 1.5's schedule: the noisiest step
    # a ControlNet, once loaded, is counted too
    net = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(4, 4, 8, 8))
    engine.annotators._controlnets["canny"] = (net, "test")
    assert {p.name for p in engine.anatomy().parts} >= {"ControlNet: canny"}


def test_the_table_and_the_chart(tiny_model, families):
    loaded = parts.of_pipeline(tiny_model.pipe, "loaded: tiny", 64)
    models = [loaded, *families.values()]
    frame = anatomy_tab.table(models)
    assert list(frame.columns) == ["", "loaded: tiny", "SD 1.5", "SDXL", "SD3 Medium"]
    row = dict(zip(frame[""], frame["SDXL"]))
    assert row["denoiser"] == "U-Net 2.57B" and row["compression (image numbers / latent numbers)"] == "48x"
    assert row["latent at the native size"] == "128x128x4" and "OpenCLIP ViT-bigG/14 694.7M" in row["text encoders"]
    assert dict(zip(frame[""], frame["SD3 Medium"]))["compression (image numbers / latent numbers)"] == "12x"
    assert dict(zip(frame[""], frame["loaded: tiny"]))["ControlNets"] == "none loaded yet"
    chart = anatomy_tab.bars(models)
    for a in models:
        total = chart[chart["model"] == a.name]["parameters (millions)"].sum()
        assert total == pytest.approx(a.params / 1e6, abs=0.3)
    with gr.Blocks() as demo:
        anatomy_tab.build(lambda: loaded, lambda: families)
    fill = next(f.fn for f in demo.fns.values() if f.api_name == "anatomy")
    shown, plotted, key = fill()
    assert shown == anatomy_tab.markdown(frame) and isinstance(plotted, gr.BarPlot)
    assert plotted.sort == ["loaded: tiny", "SD 1.5", "SDXL", "SD3 Medium"]
    assert "| **denoiser** | UNet2DConditionModel" in shown and "| U-Net 2.57B |" in shown
    assert "Too small to see at this scale: loaded: tiny" in key and "text encoders" in key


def test_noise_schedules_side_by_side_cross_0_db_where_their_maths_says():
    import json

    from playground.parts import schedules
    from playground.settings import BUNDLED_MODEL
    from playground.ui.anatomy import crossings, schedule_frame

    config = json.loads((BUNDLED_MODEL / "scheduler" / "scheduler_config.json").read_text())
    # the offline model loaded: its curve is drawn once, named after the reference it is
    offline_loaded = [s.name for s in schedules(config, "offline", flow=False)]
    assert offline_loaded == ["loaded: offline = offline model (rescaled)", "linear (DDPM)", "cosine (improved DDPM)",
                              "scaled linear (SD 1.x-XL)", "SD3 flow, shift 3"]
    sd15 = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    assert [s.name for s in schedules(sd15, "SD 1.5", flow=False)][:1] == ["loaded: SD 1.5 = scaled linear (SD 1.x-XL)"]
    linear = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.03, "beta_schedule": "linear"}
    found = {s.name.split(":")[0]: s for s in schedules(linear, "other", flow=False)}  # one like none of them
    assert list(found) == ["loaded", "linear (DDPM)", "cosine (improved DDPM)", "scaled linear (SD 1.x-XL)",
                           "offline model (rescaled)", "SD3 flow, shift 3"]
    # SD 1.5's last step keeps sqrt(alpha-bar) = 6.8% of the image; the offline model's rescaled one 2%
    assert abs(found["scaled linear (SD 1.x-XL)"].alpha_bar[-1] ** 0.5 - 0.068) < 0.001
    assert abs(found["offline model (rescaled)"].alpha_bar[-1] ** 0.5 - 0.02) < 0.001
    # flow with shift 3: sigma = 3t / (1 + 2t) is 1/2 (0 dB) at t = 1/4
    assert abs(found["SD3 flow, shift 3"].crossing - 0.25) < 2e-3
    # linear crosses before cosine (it destroys the image sooner), and every schedule starts near clean
    assert found["linear (DDPM)"].crossing < found["cosine (improved DDPM)"].crossing
    assert all(s.snr_db[0] > 20 for s in found.values())
    frame = schedule_frame(list(found.values()))
    assert len(frame) == 6 * 100 and frame["SNR (dB)"].min() == -40.0
    assert "SD3 flow, shift 3**: 0 dB at t = 0.250 T" in crossings(list(found.values()))
    sd3 = schedules({"num_train_timesteps": 1000, "shift": 3.0}, "SD3", flow=True)[0]
    assert abs(sd3.crossing - 0.25) < 2e-3
