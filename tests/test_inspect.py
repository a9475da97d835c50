"""Latent inspector: recording, channel maths, the RGB fit, the VAE round trip, state size, the API."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from playground import latents
from playground.engine import Engine
from playground.outputs import save_trajectory
from playground.errors import InvalidRequest
from playground.schema import GenerateRequest, RoundTripRequest
from playground.sampling import predict_x0

from conftest import tiny_settings

REQ = GenerateRequest(prompt="a red circle", negative_prompt="blurry", seed=4, steps=6, cfg_scale=5,
                      scheduler="Euler", width=64, height=64)


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_dir):
    return Engine(tiny_model, tiny_settings(tiny_dir, max_size=512, max_steps=60))


@pytest.fixture(scope="module")
def traj(engine):
    return engine.inspect(REQ)


def test_trajectory_records_every_evaluation_faithfully(engine, traj):
    t = traj.tensors
    assert traj.steps == 6 and set(t) == {"x_t", "x0", "out_cond", "out_uncond", "out", "timesteps", "sigmas"}
    assert t["x_t"].shape == (6, 4, 8, 8) and t["x_t"].dtype == torch.float16
    # step 0 sees the seeded noise times the scheduler's initial sigma
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(4))[0]
    assert torch.allclose(t["x_t"][0].float(), noise * float(t["sigmas"][0] ** 2 + 1) ** 0.5, atol=2e-2)
    # the guided output is uncond + CFG * (cond - uncond)
    guided = t["out_uncond"].float() + 5 * (t["out_cond"].float() - t["out_uncond"].float())
    assert torch.allclose(guided, t["out"].float(), atol=5e-2, rtol=1e-2)
    # x0 is the formula applied to what was recorded (Euler: x0 = x_t - sigma * eps)
    for k in range(6):
        want = predict_x0(t["x_t"][k].float(), t["out"][k].float(), float(t["sigmas"][k]), True, "epsilon")
        assert torch.allclose(t["x0"][k].float(), want, atol=5e-2, rtol=1e-2)
    # the final image is the same picture the Prompt tab makes
    alone = engine.generate(REQ)
    assert np.abs(np.asarray(traj.image, dtype=int) - np.asarray(alone.images[0].image, dtype=int)).max() <= 1


def test_no_cfg_records_no_unconditional_pass(engine):
    t = engine.inspect(GenerateRequest(**{**REQ.__dict__, "cfg_scale": 1.0})).tensors
    assert "out_uncond" not in t and t["out"].shape == (6, 4, 8, 8)
    assert engine.step_view(engine.inspect(GenerateRequest(**{**REQ.__dict__, "cfg_scale": 1.0})), 2).guidance == []


def test_channel_stats_match_hand_computation():
    x = np.array([[[1.0, -1.0], [3.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[-2.0, 2.0], [-2.0, 2.0]],
                  [[5.0, 5.0], [5.0, 1.0]]])
    stats = latents.channel_stats(x)
    assert [(s.min, s.mean) for s in stats] == [(-1.0, 1.0), (0.0, 0.0), (-2.0, 0.0), (1.0, 4.0)]
    assert stats[0].std == pytest.approx(math.sqrt((0 + 4 + 4 + 0) / 4))  # values 1,-1,3,1 around mean 1
    assert stats[2].std == pytest.approx(2.0) and stats[3].std == pytest.approx(math.sqrt(3))


def test_step_view(engine, traj):
    v = engine.step_view(traj, 3)
    x_t = traj.tensors["x_t"][3].float().numpy()
    assert (v.index, v.total) == (3, 6) and v.sigma == pytest.approx(float(traj.tensors["sigmas"][3]))
    assert v.snr_db == pytest.approx(-20 * math.log10(v.sigma))
    assert v.scale == pytest.approx(np.abs(x_t).max())  # one scale shared by the 4 channels
    assert [s.mean for s in v.stats] == pytest.approx(x_t.reshape(4, -1).mean(1), abs=1e-6)
    assert len(v.channels) == 4 and v.channels[0].size == (256, 256)
    assert [c for c, _ in v.guidance][2].startswith("difference")
    with pytest.raises(InvalidRequest, match="step must be an integer from 0 to 5, got 6"):
        engine.step_view(traj, 6)


def test_diverging_colours():
    px = latents.diverging(np.array([[-2.0, -1.0, 0.0, 1.0, 0.5]]), scale=1.0)[0]
    assert tuple(px[2]) == (255, 255, 255)  # zero is white
    assert tuple(px[3]) == (178, 24, 43) and tuple(px[1]) == (33, 102, 172)  # +-scale: red / blue
    assert tuple(px[0]) == tuple(px[1])  # saturates past the scale
    assert 178 < px[4][0] < 255 and px[4][1] > 24  # halfway is pale red


def test_rgb_fit_recovers_a_known_linear_map():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 4, 8, 8, generator=g)
    true_w, true_b = torch.randn(4, 3, generator=g), torch.tensor([0.1, -0.2, 0.3])
    images = torch.einsum("nchw,cr->nrhw", z, true_w) + true_b[None, :, None, None]
    images = images + 0.001 * torch.randn(images.shape, generator=g)
    fit = latents.fit_rgb_map(z, images)
    assert torch.allclose(fit.factors, true_w, atol=1e-2) and torch.allclose(fit.bias, true_b, atol=1e-2)


def test_rgb_map_choice(engine):
    assert engine.rgb_map.source == "fitted to this VAE"  # the tiny VAE is not SD's
    assert engine.rgb_map.factors.shape == (4, 3)


def test_decode_x0_is_cached(engine, traj):
    a = engine.decode_x0(traj, 2)
    assert a.size == (64, 64) and engine.decode_x0(traj, 2) is a and set(traj.decoded) == {2}


def test_psnr_on_a_smooth_synthetic_image():
    ramp = np.tile(np.linspace(20, 220, 64), (64, 1))
    image = np.stack([ramp, ramp.T, 255 - ramp], axis=-1)
    assert latents.psnr(image, image) == math.inf
    assert latents.psnr(image, image + 2.0) == pytest.approx(20 * math.log10(255 / 2))  # MSE = 4
    noisy = image + np.random.default_rng(0).normal(0, 5, image.shape)
    assert latents.psnr(image, noisy) == pytest.approx(20 * math.log10(255 / 5), abs=0.2)


def test_vae_round_trip(engine, tmp_path):
    ramp = np.tile(np.linspace(0, 255, 100), (60, 1)).astype(np.uint8)
    picture = Image.fromarray(np.stack([ramp, ramp[::-1], ramp.T[:60, :60].repeat(2, 1)[:, :100]], -1))
    r = engine.roundtrip(RoundTripRequest(picture))
    assert r.original.size == (96, 56) and r.reconstruction.size == (96, 56)  # cut to multiples of 8
    assert r.latent_shape == (4, 7, 12) and r.ratio == pytest.approx(48.0)
    assert r.psnr == pytest.approx(latents.psnr(np.asarray(r.original), np.asarray(r.reconstruction)))
    assert len(r.channels) == 4
    big = engine.roundtrip(RoundTripRequest(Image.new("RGB", (4000, 3000), "red")))  # downscaled to MAX_SIZE first
    assert max(big.original.size) <= 512
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InvalidRequest, match="bad.png is not a readable image"):
        engine.roundtrip(RoundTripRequest(tmp_path / "bad.png"))


@pytest.mark.slow
def test_state_size_of_a_512px_run_is_five_fp16_latents_per_step(engine):
    traj = engine.inspect(GenerateRequest(prompt="x", seed=1, steps=10, cfg_scale=7.5, scheduler="DDIM",
                                          width=512, height=512))
    per_step = 5 * 4 * 64 * 64 * 2 + 2 * 4  # x_t, x0, 3 model outputs: (4, 64, 64) float16; timestep, sigma
    assert traj.nbytes == 10 * per_step
    assert 50 * per_step < 10e6  # a 50-step run: 8.2 MB, "a few tens of MB" at most


def test_saved_trajectory(engine, traj, tmp_path):
    from safetensors import safe_open

    png, path = save_trajectory(traj, tmp_path)
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == set(traj.tensors)
        assert torch.equal(f.get_tensor("x0"), traj.tensors["x0"])
        meta = f.metadata()
    assert "Seed: 4" in meta["parameters"] and meta["sigma_space"] == "True" and meta["prediction_type"] == "epsilon"
    assert png.name.endswith("seed4.png") and path.name.startswith(png.stem)  # one stem for both files


@pytest.mark.slow
def test_inspect_and_roundtrip_through_gradio_client(serve):
    from gradio_client import handle_file
    from safetensors import safe_open

    from playground.settings import ASSETS

    _, client = serve()
    out = client.predict("a red circle", "", 9, 5, 7.5, "DDIM", 64, 64, api_name="/inspect")
    image, info, file, slider = out[:4]
    assert Image.open(image).size == (64, 64) and "Seed 9" in info and "Recorded 5 model evaluations" in info
    assert "MB of cross-attention maps" in info
    assert slider["maximum"] == 5 and slider["value"] == 5
    with safe_open(file, "pt") as f:
        assert f.get_tensor("x_t").shape == (5, 4, 8, 8)
    assert "Step 5 of 5" in out[5] and len(out[6]) == 4  # the last step's text and 4 channels
    orig, recon, channels, text = client.predict(handle_file(str(ASSETS / "examples" / "scene.png")),
                                                 api_name="/vae_roundtrip")
    assert Image.open(orig).size == (128, 128) and Image.open(recon).size == (128, 128)  # MAX_SIZE 128
    assert len(channels) == 4 and "48x smaller" in text and "PSNR" in text
    with pytest.raises(Exception, match="steps must be an integer"):
        client.predict("x", "", 1, 0, 7.5, "DDIM", 64, 64, api_name="/inspect")
    # the attention endpoint: every token's map (summed over the steps) and the chosen word's, as images
    strip, word_map, text = client.predict("a red circle", "", 9, 5, 7.5, "DDIM", 64, 64, "prompt", "circle", "8x8",
                                           api_name="/attention")
    assert [item["caption"].split(" · ")[0] for item in strip] == ["<start>", "a", "red", "circle", "<end>"]
    assert Image.open(word_map).size == (64, 64) and Image.open(strip[3]["image"]).size == (64, 64)
    assert "“circle”" in text and "Layers: 8x8 (3 cross-attention layers)" in text
    with pytest.raises(Exception, match="word 'zebra' is not among the prompt's tokens"):
        client.predict("a red circle", "", 9, 5, 7.5, "DDIM", 64, 64, "prompt", "zebra", "all", api_name="/attention")
