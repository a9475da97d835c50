"""Loading through from_pretrained: local dirs, fallback with a reason, dtype, safety checker."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor

from playground.engine import Engine
from playground.loading import compile_model, load_model
from playground.schema import GenerateRequest
from playground.settings import BUNDLED_MODEL
from playground.ui import banner

from conftest import tiny_settings, write_tiny_sdxl


def test_local_directory_loads_with_explicit_dtype(tiny_dir):
    m = load_model(tiny_settings(tiny_dir, dtype="bfloat16"))
    # the banner names the folder by its last two parts, never its server path
    assert m.source == str(tiny_dir) and m.reason == f"chosen with --model {tiny_dir.parent.name}/{tiny_dir.name}"
    assert {p.dtype for p in m.pipe.unet.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in m.pipe.text_encoder.parameters()} == {torch.bfloat16}  # no mixed precision
    assert m.native_size == 64 and not m.trained


def test_bad_source_falls_back_to_bundled_with_reason(tiny_dir, tmp_path):
    m = load_model(tiny_settings(tmp_path / "does-not-exist"), bundled=tiny_dir)
    assert m.source == str(tiny_dir)
    assert "does-not-exist could not be loaded" in m.reason and "bundled offline model" in m.reason
    assert m.pipe.unet.dtype == torch.float32


def test_an_unsupported_family_is_refused_by_name_and_falls_back(tiny_dir, tmp_path):
    """model_index.json decides, never the name: a tiny SDXL saved with save_pretrained is refused before any
    weights load, with the families this app runs named, and the bundled model is used instead."""
    from playground.loading import UnsupportedFamily, family

    xl = write_tiny_sdxl(tmp_path / "sd15-looking-name")
    assert family(xl) == "StableDiffusionXLPipeline" and family(tiny_dir) == "StableDiffusionPipeline"
    index = json.loads((xl / "model_index.json").read_text())
    (xl / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxPipeline"}))
    with pytest.raises(UnsupportedFamily, match=r"names FluxPipeline \(FLUX\); this app runs SD 1.x / 2.x "
                                                r"\(StableDiffusionPipeline\), SDXL \(StableDiffusionXLPipeline\), "
                                                r"SD3 \(StableDiffusion3Pipeline\)"):
        family(xl)
    m = load_model(tiny_settings(xl), bundled=tiny_dir)
    assert m.source == str(tiny_dir) and "FluxPipeline (FLUX)" in m.reason
    assert "bundled offline model" in m.reason
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model_index.json").write_text('{"_class_name": "MysteryPipeline"}')
    with pytest.raises(UnsupportedFamily, match="MysteryPipeline \\(a family this app does not know\\)"):
        family(tmp_path / "other")


def test_auto_without_cuda_uses_bundled(tiny_dir):
    m = load_model(tiny_settings("auto", dtype="auto"), bundled=tiny_dir)
    assert m.source == str(tiny_dir) and "no CUDA GPU" in m.reason


@pytest.mark.slow
def test_shipped_bundled_model_loads_and_generates():
    m = load_model(tiny_settings("bundled", dtype="auto", max_size=256))
    assert m.source == str(BUNDLED_MODEL) and m.native_size == 128 and m.dtype == torch.float32
    r = Engine(m, tiny_settings("bundled", max_size=256)).generate(GenerateRequest(prompt="a red circle", steps=2, seed=0))
    assert r.images[0].image.size == (128, 128)


def _with_safety_checker(tiny_dir, out):
    """The tiny model plus a tiny random StableDiffusionSafetyChecker, saved like SD 1.5 is."""
    base = StableDiffusionPipeline.from_pretrained(tiny_dir, dtype=torch.float32)
    config = CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
                        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=32, patch_size=8),
                        projection_dim=8)
    pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                   unet=base.unet, scheduler=base.scheduler,
                                   safety_checker=StableDiffusionSafetyChecker(config),
                                   feature_extractor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                        crop_size={"height": 32, "width": 32}))
    pipe.save_pretrained(out)
    return out


def test_safety_checker_kept_unless_disabled(tiny_dir, tmp_path, caplog, monkeypatch):
    src = _with_safety_checker(tiny_dir, tmp_path / "with-checker")
    kept = load_model(tiny_settings(src))
    assert kept.pipe.safety_checker is not None
    seen = []

    def flags_every_image(clip_input, images):  # the checker's verdict, made certain: every image flagged
        seen.append(tuple(clip_input.shape))
        return torch.zeros_like(images), [True] * len(images)

    monkeypatch.setattr(kept.pipe.safety_checker, "forward", flags_every_image)
    r = Engine(kept, tiny_settings(src)).generate(GenerateRequest(prompt="x", steps=1, seed=0, num_images=2))
    assert seen == [(2, 3, 32, 32)]  # it ran once, on both images, at its feature extractor's size
    assert [g.nsfw for g in r.images] == [True, True] and all(g.array.max() == 0 for g in r.images)  # blacked out
    with caplog.at_level("WARNING"):
        dropped = load_model(tiny_settings(src, safety_checker=False))
    assert dropped.pipe.safety_checker is None
    assert "safety checker disabled" in caplog.text


def test_loading_never_runs_remote_code(tiny_dir, monkeypatch):
    """Public Spaces: from_pretrained gets dtype (and the safety-checker choice), never remote code."""
    seen = {}
    real = StableDiffusionPipeline.from_pretrained.__func__

    def spy(cls, source, **kwargs):
        seen.update(kwargs)
        return real(cls, source, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", classmethod(spy))
    load_model(tiny_settings(tiny_dir))
    assert set(seen) == {"dtype"} and seen["dtype"] == torch.float32
    load_model(tiny_settings(tiny_dir, safety_checker=False))
    assert set(seen) == {"dtype", "safety_checker", "requires_safety_checker"}
    assert "trust_remote_code" not in seen and "custom_pipeline" not in seen


@pytest.mark.slow
def test_compile_flag_wires_through_and_changes_nothing(tiny_dir):
    """--compile wraps the UNet and VAE decoder; with the 'eager' backend (no code generation, so CI
    stays fast) the images are the same as without it. Inductor itself is measured in benchmarks."""
    plain = Engine(load_model(tiny_settings(tiny_dir)), tiny_settings(tiny_dir))
    settings = tiny_settings(tiny_dir, compile=True, compile_backend="eager")
    compiled = Engine(load_model(settings), settings)
    assert type(compiled.model.pipe.unet).__name__ == "OptimizedModule"
    assert type(compiled.model.pipe.vae.decoder).__name__ == "OptimizedModule"
    assert "Compiled with torch.compile (eager)" in banner(compiled.model)
    made, generate = [], compiled.generate
    compiled.generate = lambda req, **k: made.append(generate(req, **k)) or made[-1]
    compiled.warm_up()  # one short generation at the native size, with CFG, through the compiled modules
    assert [(r.request.steps, r.request.width, r.request.cfg_scale != 1, r.unet_calls) for r in made] == [(2, 64, True, 2)]
    req = GenerateRequest(prompt="a red circle", seed=3, steps=3, num_images=2)
    a, b = plain.generate(req).images, compiled.generate(req).images
    assert all(abs(x.array - y.array).max() <= 1e-5 for x, y in zip(a, b))
    assert compiled.generate(GenerateRequest(prompt="x", seed=1, steps=2, width=72)).images[0].image.size == (72, 64)


def test_compile_on_a_cpu_freezes_the_weights_into_static_graphs(tiny_dir, monkeypatch):
    """Inductor on a CPU: static shapes, frozen weights, the C++ wrapper (measured fastest there, BENCHMARKS.md);
    any other backend or device keeps dynamic shapes and leaves inductor's settings alone. torch.compile is lazy,
    so nothing is compiled here: only what compile_model asks for."""
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor, "freezing", False)
    monkeypatch.setattr(inductor, "cpp_wrapper", False)
    asked = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: asked.append(kw) or module)
    compile_model(load_model(tiny_settings(tiny_dir)), "eager")
    assert asked == [{"backend": "eager", "dynamic": True}] * 2 and not inductor.freezing and not inductor.cpp_wrapper
    asked.clear()
    compile_model(load_model(tiny_settings(tiny_dir)), "inductor")
    assert asked == [{"backend": "inductor", "dynamic": False}] * 2 and inductor.freezing and inductor.cpp_wrapper
