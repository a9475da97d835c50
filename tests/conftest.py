"""Shared fixtures: a tiny random-weight SD-shaped model saved to disk and loaded the app's way, and
one factory for launched apps; and the rings every test belongs to.

The rings (markers registered in pyproject.toml); each test is in exactly one of the first three:
  nomodel   fast units with no model at all: validation, registries, grid parsing, metadata, the tabs built against
            fake functions (a nomodel test that builds a module with real weights fails, naming the ring it needs)
  tiny      the tiny random-weight models (the fixtures below, or built by the test): the loop against diffusers,
            every family and action, in one process
  slow      launched servers, load, training runs, benchmarks, the shipped weights, and the browser
  browser   the tests that drive Chromium (all of them slow too)
A test marked nothing is put in a ring here: `tiny` where it uses one of MODEL_FIXTURES or its file is in
BUILDS_ITS_MODELS, else `nomodel`.
`python -m pytest -m "not slow" -n 2` runs the first two on both cores (`-m nomodel`, `-m tiny` each one of them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from typing import Callable

import pytest
import torch

from playground.engine import Engine
from playground.loading import LoadedModel, load_model
from playground.settings import Settings
from playground.tiny import arch, untrained

# one thread: the tests' models are tiny, so a second thread only adds OpenMP's hand-offs, and where the other core
# is busy (a shared machine, a server under test) each hand-off waits for it: a tiny convolution measured 80 us on one
# thread against 15-29 ms on two (benchmarks/ measure the app's own threads)
torch.set_num_threads(int(os.environ.get("PLAYGROUND_TEST_THREADS", "1")))

# the fixtures that write or load a model: a test that uses one (directly or through another fixture) is `tiny`
MODEL_FIXTURES = frozenset({"tiny_dir", "tiny_vpred_dir", "tiny_sd2_dir", "tiny_sd3_dir", "tiny_sdxl_dir",
                            "tiny_refiner_dir", "tiny_model", "annotators_dir"})

# files whose tests build their own tiny models (no fixture says so): their unmarked tests are `tiny`
BUILDS_ITS_MODELS = frozenset({"test_mmdit.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put every test in its ring: `slow` (browser tests included) and `tiny` as marked; a test marked neither is
    `tiny` if it uses a model fixture or its file builds its models, else `nomodel`. A test marked `nomodel` that uses
    a model fixture is an error."""
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
        uses_model = bool(MODEL_FIXTURES & set(item.fixturenames))
        if item.get_closest_marker("nomodel") and uses_model:
            raise pytest.UsageError(f"{item.nodeid} is marked nomodel but uses a model fixture: mark it tiny")
        if item.get_closest_marker("slow") or item.get_closest_marker("tiny") or item.get_closest_marker("nomodel"):
            continue
        builds = item.path.name in BUILDS_ITS_MODELS
        item.add_marker(pytest.mark.tiny if uses_model or builds else pytest.mark.nomodel)


@pytest.fixture(autouse=True)
def nomodel_builds_no_model(request, monkeypatch):
    """In the `nomodel` ring, building a module with weights (not on the meta device) fails the test."""
    if request.node.get_closest_marker("nomodel") is None or request.node.get_closest_marker("slow"):
        return
    register = torch.nn.Module.register_parameter

    def refuse(module, name, param):
        if param is not None and param.device.type != "meta":
            raise AssertionError(f"a nomodel test built {type(module).__name__} with weights: mark it tiny")
        return register(module, name, param)

    monkeypatch.setattr(torch.nn.Module, "register_parameter", refuse)


def tiny_settings(model_dir, **overrides) -> Settings:
    s = Settings(model=str(model_dir), device="cpu", dtype="float32", max_steps=50, max_size=128, max_images=4)
    return dataclasses.replace(s, **overrides)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `condition` every 10 ms until it holds; fail after `timeout` seconds (bounded in time and count)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def settled(count: Callable[[], int], quiet: float = 0.3, timeout: float = 10.0) -> int:
    """Wait until `count()` stops growing for `quiet` seconds (bounded by `timeout`); its value then."""
    deadline, last, since = time.monotonic() + timeout, count(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"still growing after {timeout:g} s: {count()}")
        time.sleep(0.02)
        if count() != last:
            last, since = count(), time.monotonic()
    return last


def write_tiny_sdxl(out):
    """A tiny random-weight SDXL in the diffusers layout (two text encoders, text-time conditioning)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from playground.tiny.vocab import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    text = dict(vocab_size=tokenizer.vocab_size, max_position_embeddings=77, intermediate_size=32,
                num_attention_heads=2, num_hidden_layers=1, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                layers_per_block=1, norm_num_groups=4, attention_head_dim=(2, 4),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=16 + 6 * 8, use_linear_projection=True)
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                          up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4,
                          scaling_factor=0.13025, force_upcast=True),
        text_encoder=CLIPTextModel(CLIPTextConfig(hidden_size=16, projection_dim=16, **text)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=16, projection_dim=16, **text)),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))
    pipe.save_pretrained(out)
    return out


def write_tiny_sdxl_refiner(out, base_dir):
    """A tiny random-weight SDXL refiner in the diffusers layout (StableDiffusionXLImg2ImgPipeline): its own U-Net
    on the base's second text encoder and VAE (saved beside it, as the published refiner is; the app loads the
    base's instead), with aesthetic-score size ids."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(1)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                layers_per_block=1, norm_num_groups=4, attention_head_dim=(2, 4),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=16 + 5 * 8, use_linear_projection=True)
    StableDiffusionXLImg2ImgPipeline(
        vae=AutoencoderKL.from_pretrained(base_dir, subfolder="vae"),
        text_encoder=None, tokenizer=None, unet=unet,
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(base_dir, subfolder="text_encoder_2"),
        tokenizer_2=CLIPTokenizer.from_pretrained(base_dir, subfolder="tokenizer_2"),
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_refiner_dir(tiny_sdxl_dir, tmp_path_factory):
    return write_tiny_sdxl_refiner(tmp_path_factory.mktemp("tiny-refiner"), tiny_sdxl_dir)


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory):
    return write_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


def write_tiny_sd2(out):
    """A tiny random-weight SD 2.x in the diffusers layout: v-prediction, upcast attention, linear projections in
    the transformer blocks, per-level head dims, a GELU CLIP text encoder (OpenCLIP ViT-H as exported), and a
    768-px native size (96x96 latents), as stabilityai/stable-diffusion-2-1 is configured."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from playground.tiny.vocab import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    unet = UNet2DConditionModel(sample_size=96, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                layers_per_block=1, norm_num_groups=4, attention_head_dim=(2, 4),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24,
                                use_linear_projection=True, upcast_attention=True)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=77, hidden_size=24,
                                        intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                                        hidden_act="gelu", projection_dim=24, bos_token_id=tokenizer.bos_token_id,
                                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    StableDiffusionPipeline(
        vae=AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                          up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4),
        text_encoder=text, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False,
                                steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_sd2_dir(tmp_path_factory):
    return write_tiny_sd2(tmp_path_factory.mktemp("tiny-sd2"))


def write_tiny_sd3(out, t5: bool = True, t5_tokens: int = 512, sample_size: int = 8):
    """A tiny random-weight SD3 in the diffusers layout: an MMDiT with patch 2 (two joint blocks), CLIP-L and
    CLIP-G with projections, a T5 encoder (or none: zeros in its place), a 16-channel VAE with shift, and
    FlowMatchEuler with shift 3. CLIP widths (16 + 16) are padded to T5's 48, as SD3 pads 768 + 1280 to 4096."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, \
        StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from playground.tiny.vocab import build_t5_tokenizer, build_tokenizer

    torch.manual_seed(0)
    tokenizer, tokenizer_3 = build_tokenizer(), build_t5_tokenizer(model_max_length=t5_tokens)
    text = dict(vocab_size=tokenizer.vocab_size, max_position_embeddings=77, intermediate_size=32,
                num_attention_heads=2, num_hidden_layers=2, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, hidden_size=16,
                projection_dim=16)
    parts = dict(
        transformer=SD3Transformer2DModel(sample_size=sample_size, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                                          attention_head_dim=8, num_attention_heads=2, joint_attention_dim=48,
                                          caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=16),
        vae=AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                          up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, norm_num_groups=4,
                          scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**text)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text)), tokenizer_2=tokenizer,
        text_encoder_3=T5EncoderModel(T5Config(vocab_size=len(tokenizer_3), d_model=48, d_kv=8, d_ff=32, num_layers=1,
                                               num_heads=2, decoder_start_token_id=0)) if t5 else None,
        tokenizer_3=tokenizer_3 if t5 else None, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    StableDiffusion3Pipeline(**parts).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory):
    return write_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A TEST-sized pipeline written with save_pretrained (fp32, 64x64 native, 8x8 latents)."""
    out = tmp_path_factory.mktemp("tiny-sd")
    untrained.write(out, arch.TEST, seed=0, dtype=torch.float32)
    return out


@pytest.fixture(scope="session")
def tiny_vpred_dir(tmp_path_factory):
    """The same model configured for v-prediction, like SD 2.x."""
    out = tmp_path_factory.mktemp("tiny-sd-v")
    untrained.write(out, dataclasses.replace(arch.TEST, prediction_type="v_prediction"), seed=0, dtype=torch.float32)
    return out


@pytest.fixture(scope="session")
def annotators_dir(tmp_path_factory):
    """controlnet_aux's OpenposeDetector weights in the lllyasviel/Annotators layout, random (seed 0): body and
    hand keys stored without their first module prefix, as the published files are (about 490 MB)."""
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model

    out = tmp_path_factory.mktemp("annotators")
    torch.manual_seed(0)
    for name, model in (("body_pose_model.pth", bodypose_model()), ("hand_pose_model.pth", handpose_model())):
        torch.save({k.split(".", 1)[1]: v for k, v in model.state_dict().items()}, out / name)
    torch.save(FaceNet().state_dict(), out / "facenet.pth")
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_dir) -> LoadedModel:
    """Loaded through playground.loading, exactly as the app loads a --model directory."""
    return load_model(tiny_settings(tiny_dir))


@contextlib.contextmanager
def serving(engine: Engine, settings: Settings):
    """The whole app on 127.0.0.1 (settings.port), as app.py serves it: (the app, its URL). Closed on exit. Its gradio
    cache is kept until it stops (CACHE_HOURS=0): a stopping app empties its cache, which is shared by content with
    the apps launched after it in this process (same seeds, same files)."""
    from playground.ui import build_app, launch_options

    settings = dataclasses.replace(settings, cache_hours=0)
    demo = build_app(engine, settings)
    demo.queue(max_size=settings.queue_size).launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    try:
        yield demo, f"http://127.0.0.1:{settings.port}/"
    finally:
        demo.close()


@contextlib.contextmanager
def launched(engine: Engine, settings: Settings):
    """serving()'s URL alone."""
    with serving(engine, settings) as (_, url):
        yield url


@pytest.fixture(scope="module")
def serve(tiny_model, tiny_dir, tmp_path_factory):
    """A factory: serve(**settings overrides) -> (engine, gradio_client.Client) for the tiny model, on a free
    port with its own output folder; every app and client it made is closed when the module ends."""
    from gradio_client import Client

    with contextlib.ExitStack() as stack:
        def make(**overrides):
            settings = tiny_settings(tiny_dir, port=free_port(), output_dir=tmp_path_factory.mktemp("out"),
                                     **overrides)
            engine = Engine(tiny_model, settings)
            url = stack.enter_context(launched(engine, settings))
            client = Client(url, verbose=False)
            stack.callback(client.close)
            return engine, client

        yield make
