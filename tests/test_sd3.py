"""SD3-shaped models: our loop against diffusers' StableDiffusion3Pipeline for every flow scheduler, with and
without T5, on a tiny random-weight SD3 (MMDiT, CLIP-L + CLIP-G + T5, 16-channel VAE, flow matching) built from
configs, saved with save_pretrained and loaded through the app's loader; and the Engine's actions on it."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from playground import families, schedulers
from playground.schema import TokenRequest, RoundTripRequest
from playground.loading import load_model
from playground.sampling import Components, Job, denoise

from conftest import tiny_settings

PROMPT, NEGATIVE = "a red circle on a blue background", "blurry"


@pytest.fixture(scope="module")
def sd3(tiny_sd3_dir):
    return load_model(tiny_settings(tiny_sd3_dir))


@pytest.fixture(scope="module")
def sd3_no_t5(tiny_sd3_dir):
    """The same folder loaded with T5 left out (--no-t5), as a user short of memory would."""
    return load_model(dataclasses.replace(tiny_settings(tiny_sd3_dir), t5=False))


def job(name="Flow Euler", negative=NEGATIVE, cfg=5.0, n=2, size=64, shift=None, control=None) -> Job:
    return Job(scheduler=name, prompts=[PROMPT] * n, negative_prompts=[negative] * n, guidance=[cfg] * n,
               generators=[torch.Generator("cpu").manual_seed(7 + i) for i in range(n)], steps=4, height=size,
               width=size, shift=shift, control=control)


def pixels(images: torch.Tensor) -> np.ndarray:
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()


def parts(model, name="Flow Euler", shift=None) -> dict:
    base = model.pipe
    return dict(vae=base.vae, text_encoder=base.text_encoder, text_encoder_2=base.text_encoder_2,
                text_encoder_3=base.text_encoder_3, tokenizer=base.tokenizer, tokenizer_2=base.tokenizer_2,
                tokenizer_3=base.tokenizer_3, transformer=base.transformer,
                scheduler=schedulers.make(name, base.scheduler.config, shift))


def theirs(model, name="Flow Euler", negative=NEGATIVE, cfg=5.0, n=2, size=64, shift=None, **kwargs):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(**parts(model, name, shift))
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, negative_prompt=negative, num_inference_steps=4, guidance_scale=cfg, num_images_per_prompt=n,
                height=size, width=size, output_type="np",
                generator=[torch.Generator("cpu").manual_seed(7 + i) for i in range(n)], **kwargs).images


def mine(model, **kwargs) -> np.ndarray:
    return pixels(denoise(Components.from_pipeline(model.pipe), job(**kwargs)).images)


def test_the_app_loads_it_as_sd3(sd3, sd3_no_t5):
    c = Components.from_pipeline(sd3.pipe)
    assert type(sd3.pipe).__name__ == "StableDiffusion3Pipeline" and sd3.family.name == "SD3"
    assert c.family is families.FAMILIES["StableDiffusion3Pipeline"] and c.family.prediction == "flow_prediction"
    assert c.denoiser is sd3.pipe.transformer and c.family.latent_channels(c) == 16
    assert sd3.native_size == 64 and sd3.pipe.text_encoder_3 is not None and sd3_no_t5.pipe.text_encoder_3 is None


@pytest.mark.parametrize("name", schedulers.FLOW_NAMES)
def test_loop_matches_diffusers_sd3_for_every_flow_scheduler(sd3, name):
    got, ref = mine(sd3, name=name), theirs(sd3, name)
    assert got.shape == ref.shape == (2, 64, 64, 3)
    assert np.abs(got - ref).max() <= 1e-4
    assert np.abs(got[0] - got[1]).max() > 1e-3


@pytest.mark.parametrize("cfg", [1.0, 5.0])
def test_loop_matches_diffusers_sd3_without_t5(sd3_no_t5, cfg):
    got, ref = mine(sd3_no_t5, cfg=cfg), theirs(sd3_no_t5, cfg=cfg)
    assert np.abs(got - ref).max() <= 1e-4


def test_t5_matters_and_a_folder_without_it_loads(sd3, sd3_no_t5, tmp_path):
    assert np.abs(mine(sd3) - mine(sd3_no_t5)).max() > 1e-3  # T5's tokens reach the picture
    from conftest import write_tiny_sd3

    saved = load_model(tiny_settings(write_tiny_sd3(tmp_path / "no-t5", t5=False)))  # model_index: T5 null
    assert saved.family.name == "SD3" and saved.pipe.text_encoder_3 is None


@pytest.mark.parametrize("name", ["Flow Euler", "DPM++ 2M (flow)"])
def test_the_shift_is_the_schedulers_and_matches_diffusers(sd3, name):
    got = mine(sd3, name=name, shift=1.0)
    assert np.abs(got - theirs(sd3, name, shift=1.0)).max() <= 1e-4
    assert np.abs(got - mine(sd3, name=name)).max() > 1e-3  # 1.0 is not the model's 3.0


def test_the_engine_runs_every_action_on_sd3(sd3, tiny_sd3_dir, tmp_path):
    from PIL import Image

    from playground.engine import Engine
    from playground.errors import InvalidRequest
    from playground.schema import GenerateRequest, GridRequest, InspectRequest

    engine = Engine(sd3, tiny_settings(tiny_sd3_dir, grid_reference_steps=16))  # the steps axis: a 16-step reference
    assert engine.limits.schedulers == schedulers.FLOW_NAMES
    req = GenerateRequest(prompt=PROMPT, seed=3, steps=3, scheduler="Flow Euler", width=64, height=64)
    made = engine.generate(req)
    assert made.images[0].image.size == (64, 64) and made.images[0].params.shift == 0
    with pytest.raises(InvalidRequest, match=r"width must be a multiple of 16, got 72"):  # 8 (the VAE) x 2 (a patch)
        engine.generate(GenerateRequest(prompt=PROMPT, scheduler="Flow Euler", width=72, height=64))
    with pytest.raises(InvalidRequest, match=r"'DDIM' does not fit this model \(SD3, a flow-matching model\); "
                                             r"choose one of: 'Flow Euler'"):
        engine.generate(GenerateRequest(prompt=PROMPT, scheduler="DDIM"))
    shifted = engine.generate(GenerateRequest(prompt=PROMPT, seed=3, steps=3, scheduler="Flow Euler", shift=1.0))
    assert shifted.images[0].params.shift == 1.0
    assert np.abs(shifted.images[0].array - made.images[0].array).max() > 1e-3
    for axis, columns in (("cfg", "1, 5"), ("steps", "2, 3"), ("shift", "1, 3, 6")):
        grid = engine.grid(GridRequest(base=req, schedulers=("Flow Euler", "UniPC (flow)"), columns=columns, axis=axis))
        assert len(grid.cells) == 2 and len(grid.cells[0]) == len(columns.split(",")) and grid.flow_sigmas
    by_shift = grid.cells[0]
    assert [c.generated.params.shift for c in by_shift] == [1.0, 3.0, 6.0]
    assert np.array_equal(by_shift[1].generated.array, made.images[0].array)  # 3 is SD3's own shift
    traj = engine.inspect(req)
    assert traj.tensors["x_t"].shape == (3, 16, 8, 8) and traj.flow
    assert np.array_equal(np.asarray(traj.image), np.asarray(made.images[0].image))
    assert traj.attention.layers == {(4, 4, 0, 0): 1, (4, 4, 1, 1): 1}  # each joint block, on the 4x4 patch grid
    assert traj.attention.resolution_names == ["all", "block 0", "block 1"] == engine.limits.attention_layers(64, 64)
    one = engine.attention_view(traj, 2, "red", "block 1")
    assert one.strip and np.abs(np.asarray(one.at_step, dtype=float) - np.asarray(engine.attention_view(traj, 2, "red", "block 0").at_step, dtype=float)).max() > 0
    view = engine.step_view(traj, 0)
    assert len(view.channels) == 16 and view.snr_db < -40  # the flow starts at sigma 1: pure noise
    # x0 = x_t - sigma v: Flow Euler's last step lands on sigma 0 with exactly that, so the last predicted x0
    # through the VAE is the final picture (up to the trajectory's fp16)
    last = np.asarray(engine.decode_x0(traj, traj.steps - 1), dtype=float)
    assert np.abs(last - np.asarray(traj.image, dtype=float)).max() <= 2
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), "white").save(photo)
    trip = engine.roundtrip(RoundTripRequest(str(photo)))
    assert len(trip.channels) == 16
    anatomy = engine.anatomy()
    assert any(p.name.startswith("denoiser: SD3Transformer2DModel") for p in anatomy.parts) and len(anatomy.text) == 3
    count = engine.count_tokens(TokenRequest("a red circle"))
    assert (count.used, count.limit, count.encoders) == (5, 77, 2) and (count.t5.used, count.t5.limit) == (4, 256)
    from playground.ui.prompt import token_text

    assert token_text(count) == "5 / 77 tokens (each of its 2 CLIP text encoders)  \nT5: 4 / 256 tokens"


def sd3_controlnet(model, zeros_for_pooled: bool = True):
    """A tiny SD3ControlNetModel made from the tiny MMDiT, its zero-initialised outputs made non-zero (so the test
    can see the residuals)."""
    from diffusers import SD3ControlNetModel

    torch.manual_seed(1)
    # from a copy: diffusers' from_transformer writes its num_layers into the transformer's own config
    net = SD3ControlNetModel.from_transformer(copy.deepcopy(model.pipe.transformer), num_layers=1,
                                              num_extra_conditioning_channels=0)
    net.register_to_config(force_zeros_for_pooled_projection=zeros_for_pooled)
    for p in net.parameters():
        p.data.add_(torch.randn_like(p) * 0.02)
    return net.eval()


@pytest.mark.parametrize("zeros_for_pooled", [True, False])  # InstantX's kind, and one that takes the VAE's shift
def test_controlnet_matches_diffusers_sd3_controlnet_pipeline(sd3, zeros_for_pooled, monkeypatch):
    from diffusers import StableDiffusion3ControlNetPipeline
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from playground.sampling import Control

    # the control image's latents are a sample: diffusers draws it from torch's global generator (whatever state
    # that is in), we from the job's seed, so the same seed makes the same picture; compared here at the mode
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())
    from PIL import Image

    net = sd3_controlnet(sd3, zeros_for_pooled)
    # a picture, as the app's maps are (diffusers takes a tensor as it is, without scaling it to [-1, 1])
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    cond = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    steer = Control(model=net, image=cond, scale=0.8, start=0.2, end=0.8)
    got = mine(sd3, n=1, control=steer)
    pipe = StableDiffusion3ControlNetPipeline(controlnet=net, **parts(sd3))
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=5.0, height=64, width=64,
               output_type="np", generator=[torch.Generator("cpu").manual_seed(7)], control_image=picture,
               controlnet_conditioning_scale=0.8, control_guidance_start=0.2, control_guidance_end=0.8).images
    assert np.abs(got - ref).max() <= 1e-4
    assert np.abs(got - mine(sd3, n=1)).max() > 1e-3  # and the ControlNet changed the picture


def test_the_engine_steers_sd3_with_an_sd3_controlnet_from_a_folder(sd3, tiny_sd3_dir, tmp_path):
    from PIL import Image, ImageDraw

    from playground.engine import Engine
    from playground.schema import ControlRequest, GenerateRequest

    sd3_controlnet(sd3).save_pretrained(tmp_path / "controlnet-canny")
    engine = Engine(sd3, tiny_settings(tiny_sd3_dir, controlnets={"canny": str(tmp_path / "controlnet-canny")}))
    photo = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(photo).rectangle((16, 16, 48, 48), fill="black")
    photo.save(tmp_path / "photo.png")
    base = GenerateRequest(prompt=PROMPT, seed=3, steps=3, scheduler="Flow Euler", width=64, height=64)
    out = engine.control(ControlRequest(image=str(tmp_path / "photo.png"), base=base))
    net, _ = engine.annotators.controlnet("canny")
    assert type(net).__name__ == "SD3ControlNetModel" and out.images[0].image.size == (64, 64)
    plain = engine.generate(base).images[0].array
    assert np.abs(out.images[0].array - plain).max() > 1e-3
    assert "ControlNet: canny" in [p.name for p in engine.anatomy().parts]


@pytest.mark.slow
def test_the_launched_app_answers_with_sd3(sd3, tiny_sd3_dir, tmp_path):
    """The whole app on the tiny SD3, through gradio_client: generate (with a shift), grid (a shift axis), inspect
    (16 channels), attention (joint attention), control (an SD3 ControlNet), anatomy; a U-Net's scheduler refused."""
    from gradio_client import Client, handle_file
    from PIL import Image
    from safetensors import safe_open

    from conftest import free_port, launched
    from playground.engine import Engine
    from playground.metadata import read_png

    sd3_controlnet(sd3).save_pretrained(tmp_path / "controlnet")
    settings = tiny_settings(tiny_sd3_dir, port=free_port(), output_dir=tmp_path / "out",
                             controlnets={"canny": str(tmp_path / "controlnet")}, slg_layers=(1,))
    with launched(Engine(sd3, settings), settings) as url:
        client = Client(url, verbose=False)
        try:
            _, gallery, info = client.predict(PROMPT, "", 5, 3, 5.0, "Flow Euler", 64, 64, 1, 2.0,
                                              api_name="/generate")[:3]
            assert Image.open(gallery[0]["image"]).size == (64, 64) and "shift 2" in info
            assert (read_png(gallery[0]["image"]).seed, read_png(gallery[0]["image"]).shift) == (5, 2.0)
            _, gallery, info = client.predict(PROMPT, "", 5, 10, 5.0, "Flow Euler", 64, 64, 1, 0, 0, 2.8,
                                              api_name="/generate")[:3]
            assert "skip-layer guidance 2.8 (blocks 1)" in info
            restored = client.predict(handle_file(gallery[0]["image"]), api_name="/restore")
            assert (restored[8], restored[10]) == (0, 2.8)  # shift, skip-layer guidance
            with pytest.raises(Exception, match="'DDIM' does not fit this model .*'Flow Euler', 'Flow Heun'"):
                client.predict(PROMPT, "", 5, 3, 5.0, "DDIM", 64, 64, 1, 0, api_name="/generate")
            sheet, cells = client.predict(PROMPT, "", 5, 2, ["Flow Euler", "DPM++ 2M (flow)"], "1, 3", 64, 64,
                                          "shift", 5.0, api_name="/grid")[:2]
            assert len(cells) == 4 and "shift 3" in cells[1]["caption"]
            out = client.predict(PROMPT, "", 5, 3, 5.0, "Flow Euler", 64, 64, "prompt", api_name="/inspect")
            assert "Recorded 3 model evaluations" in out[1]
            with safe_open(out[2], "pt") as f:
                assert f.get_tensor("x_t").shape == (3, 16, 8, 8)
            assert len(out[6]) == 16  # a tile per latent channel
            strip, word_map, text = client.predict(PROMPT, "", 5, 3, 5.0, "Flow Euler", 64, 64, "prompt", "red",
                                                   "all", api_name="/attention")
            assert "red" in [item["caption"].split(" · ")[0] for item in strip] and "“red”" in text
            assert Image.open(word_map).size == (64, 64)
            photo = tmp_path / "photo.png"
            Image.new("RGB", (64, 64), "white").save(photo)
            control_map, images, info = client.predict(handle_file(str(photo)), "canny", "canny", 100, 200, "crop", 1.0,
                                                       0.0, 1.0, PROMPT, "", 5, 2, 5.0, "Flow Euler", 64, 64, 1,
                                                       api_name="/control")
            assert len(images) == 2
            table, *_ = client.predict(api_name="/anatomy")
            assert "SD3Transformer2DModel" in table and "T5EncoderModel" in table
            _, _, key, zero_db = client.predict(api_name="/schedules")
            assert "SD3 flow, shift 3" in key
            assert "**loaded: " in zero_db and "0 dB at t = 0.250 T" in zero_db  # its own flow, shift 3
        finally:
            client.close()


def test_the_inspector_maps_clip_and_t5_tokens_of_sd3(sd3, tiny_sd3_dir):
    from playground.engine import Engine
    from playground.schema import GenerateRequest
    from playground.ui.attention import token_chips, token_choices

    engine = Engine(sd3, tiny_settings(tiny_sd3_dir))
    traj = engine.inspect(GenerateRequest(prompt="a red circle", seed=3, steps=2, scheduler="Flow Euler", width=64,
                                          height=64))
    a = traj.attention
    assert [(t.text, t.position, t.encoder) for t in a.kept] == [
        ("<start>", 0, "CLIP"), ("a", 1, "CLIP"), ("red", 2, "CLIP"), ("circle", 3, "CLIP"), ("<end>", 4, "CLIP"),
        ("a", 77, "T5"), ("red", 78, "T5"), ("circle", 79, "T5"), ("<end>", 80, "T5")]
    assert a.window == 77 + 256 and a.maps[(4, 4, 0, 0)].shape == (2, 9, 4, 4)
    assert token_chips(traj)[6] == ("red", "T5 token")
    choices, first = token_choices(traj)
    assert choices[6] == ("red (T5)", 6) and choices[first] == ("red", 2)
    # a T5 token's map is its own column of the joint attention, not CLIP's
    assert np.abs(a.stack(None)[2] - a.stack(None)[6]).max() > 0
    without = Engine(load_model(dataclasses.replace(tiny_settings(tiny_sd3_dir), t5=False)), tiny_settings(tiny_sd3_dir))
    assert all(t.encoder == "CLIP" for t in without.inspect(GenerateRequest(
        prompt="a red circle", seed=3, steps=2, scheduler="Flow Euler", width=64, height=64)).attention.tokens)


@pytest.mark.parametrize("name", ["Flow Euler", "DPM++ 2M (flow)"])
def test_skip_layer_guidance_matches_diffusers(sd3, name):
    """SD3.5's skip-layer guidance (here block 1 of the tiny MMDiT's two, over the middle of the run)."""
    options = dict(skip_layers=(1,), skip_scale=2.8, skip_start=0.1, skip_stop=0.9)
    got = pixels(denoise(Components.from_pipeline(sd3.pipe), dataclasses.replace(job(name), **options)).images)
    ref = theirs(sd3, name, skip_guidance_layers=[1], skip_layer_guidance_scale=2.8, skip_layer_guidance_start=0.1,
                 skip_layer_guidance_stop=0.9)
    assert np.abs(got - ref).max() <= 1e-4
    assert np.abs(got - mine(sd3, name=name)).max() > 1e-3


def test_skip_layer_guidance_through_the_engine_names_the_blocks(sd3, tiny_sd3_dir):
    from playground.engine import Engine
    from playground.errors import InvalidRequest
    from playground.schema import GenerateRequest

    # 10 steps: guidance at the steps between 0.01 and 0.2 of the way, exclusive (diffusers' window): step 1
    req = GenerateRequest(prompt=PROMPT, seed=3, steps=10, scheduler="Flow Euler", width=64, height=64,
                          skip_layer_guidance=2.8)
    with pytest.raises(InvalidRequest, match=r"skips blocks \[7, 8, 9\] \(SLG_LAYERS\), but this MMDiT has blocks 0 to 1"):
        Engine(sd3, tiny_settings(tiny_sd3_dir, slg_layers=(7, 8, 9))).generate(req)
    # without SLG_LAYERS, the model's own: the blocks 30-40% of the way down (block 0 of 2)
    assert Engine(sd3, tiny_settings(tiny_sd3_dir)).generate(req).request.skip_layers == (0,)
    engine = Engine(sd3, tiny_settings(tiny_sd3_dir, slg_layers=(1,)))
    made = engine.generate(req)
    assert made.request.skip_layers == (1,) and made.images[0].params.skip_layer_guidance == 2.8
    plain = engine.generate(dataclasses.replace(req, skip_layer_guidance=0.0))
    assert np.abs(made.images[0].array - plain.images[0].array).max() > 1e-3


def test_skip_layer_guidance_and_the_refiner_are_refused_where_they_cannot_work(sd3, tiny_sd3_dir):
    from playground.engine import Engine
    from playground.errors import InvalidRequest
    from playground.schema import ControlRequest, GenerateRequest, InspectRequest

    engine = Engine(sd3, tiny_settings(tiny_sd3_dir, slg_layers=(1,)))
    req = GenerateRequest(prompt=PROMPT, steps=10, scheduler="Flow Euler", width=64, height=64, skip_layer_guidance=2.8)
    with pytest.raises(InvalidRequest, match="works with classifier-free guidance, and CFG scale 1 has none"):
        engine.generate(dataclasses.replace(req, cfg_scale=1.0))
    with pytest.raises(InvalidRequest, match="the inspector records runs without it"):
        engine.inspect(InspectRequest(base=req))
    with pytest.raises(InvalidRequest, match="a ControlNet run takes neither"):
        engine.control(ControlRequest(image=None, base=req))


def test_an_mmdits_blocks_are_recorded_in_four_bands_of_depth():
    from playground.attention.capture import band
    from playground.tokens import resolution_names

    # SD3 Medium's 24 blocks: four bands of six (its maps kept per block were about 225 MB at 1024 px, 50 steps)
    assert sorted({band(k, 24) for k in range(24)}) == [(0, 5), (6, 11), (12, 17), (18, 23)]
    assert sorted({band(k, 38) for k in range(38)}) == [(0, 9), (10, 18), (19, 28), (29, 37)]  # SD3.5 Large
    assert all(first <= k <= last for k in range(38) for first, last in [band(k, 38)])
    assert [band(k, 2) for k in range(2)] == [(0, 0), (1, 1)]  # fewer blocks than bands: one a band
    assert resolution_names([(64, 64, 0, 5), (64, 64, 6, 11), (4, 4, 1, 1)]) == ["all", "blocks 0-5", "blocks 6-11",
                                                                                   "block 1"]
