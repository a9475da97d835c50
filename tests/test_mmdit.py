"""The second offline model's code (playground/tiny/mmdit.py) at the tests' size: a few training steps, the
export loaded through the app's own loader and run through the app's SD3 path, checked against diffusers'
StableDiffusion3Pipeline on the same weights, and the import that resumes training from an export."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import SD3Transformer2DModel

from playground.engine import Engine
from playground.loading import MARKER, load_model
from playground.schema import GenerateRequest, InspectRequest, TokenRequest
from playground.tiny import mmdit

from conftest import tiny_settings


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run, out = tmp_path_factory.mktemp("mmdit-run"), tmp_path_factory.mktemp("mmdit-out")
    mmdit.main(["train", "--test-size", "--steps", "2", "--batch", "4", "--ckpt-dir", str(run)])
    mmdit.main(["export", str(out), "--test-size", "--ckpt-dir", str(run)])
    return run, out


def test_training_moves_the_weights_and_resumes_from_its_step(exported, tmp_path):
    run, _ = exported
    state = torch.load(run / "mmdit.pt", weights_only=False)
    assert state["step"] == 2 and state["arch"]["layers"] == mmdit.TEST_MMDIT.layers
    fresh = mmdit.new_transformer(mmdit.TEST_MMDIT).state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in state["model"].items())
    mmdit.main(["train", "--test-size", "--steps", "1", "--batch", "2", "--ckpt-dir", str(run)])
    assert torch.load(run / "mmdit.pt", weights_only=False)["step"] == 3


def test_the_export_loads_through_the_app_as_an_sd3_and_matches_diffusers(exported):
    from diffusers import StableDiffusion3Pipeline

    _, out = exported
    marker = json.loads((out / MARKER).read_text())
    assert marker["t5_tokens"] == 1 and marker["name"] == "playground-offline-mmdit"
    settings = tiny_settings(out)
    model = load_model(settings)
    assert model.family.name.startswith("SD3") and model.t5_tokens == 1 and model.offline
    engine = Engine(model, settings)
    req = GenerateRequest(prompt="a red circle on the left", seed=4, steps=6, cfg_scale=4.0, scheduler="Flow Euler")
    ours = engine.generate(req).images[0].array
    pipe = model.pipe
    reference = StableDiffusion3Pipeline(**{k: v for k, v in pipe.components.items()})
    theirs = reference(req.prompt, num_inference_steps=6, guidance_scale=4.0, height=model.native_size,
                       width=model.native_size, max_sequence_length=1, output_type="np",
                       generator=torch.Generator().manual_seed(4)).images[0]
    assert float(np.abs(ours - theirs).max()) <= 1e-4
    count = engine.count_tokens(TokenRequest("a red circle"))
    assert count.t5 is None or count.t5.limit == 1


def test_an_export_imports_back_into_a_checkpoint(exported, tmp_path):
    _, out = exported
    mmdit.main(["import", str(out), "--ckpt-dir", str(tmp_path)])
    state = torch.load(tmp_path / "mmdit.pt", weights_only=False)
    assert state["step"] >= 2 and "opt" not in state
    mmdit.main(["train", "--test-size", "--steps", "1", "--batch", "2", "--ckpt-dir", str(tmp_path)])
    assert torch.load(tmp_path / "mmdit.pt", weights_only=False)["step"] == state["step"] + 1


def test_a_transformer_converts_to_patch_1_keeping_every_weight_the_patch_does_not_shape():
    torch.manual_seed(0)
    old, arch = mmdit.new_transformer(mmdit.TEST_MMDIT), dataclasses.replace(mmdit.TEST_MMDIT, patch_size=1)
    new = mmdit.repatch(old, arch)
    assert new.config.patch_size == 1 and new.config.num_layers == old.config.num_layers
    before, after = old.state_dict(), new.state_dict()
    kept = [n for n in before if after[n].shape == before[n].shape]
    assert sum("transformer_blocks" in n for n in kept) > 10 and "context_embedder.weight" in kept
    assert all(torch.equal(after[n], before[n]) for n in kept)
    # a latent that is flat over each old patch embeds, cell by cell, as its patch did (FlexiViT's resize)
    x = torch.randn(2, 4, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)  # (B, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(new.pos_embed.proj(x),
                                   old.pos_embed.proj(x).repeat_interleave(2, 2).repeat_interleave(2, 3))
        # each new token predicts the mean of what its old token predicted for its four cells
        h = torch.randn(3, old.inner_dim)
        torch.testing.assert_close(new.proj_out(h), old.proj_out(h).reshape(3, 2, 2, 4).mean(dim=(1, 2)))
    # the positions are the old grid's: at the same patch size, diffusers' own grid exactly
    assert torch.equal(mmdit.repatch(old, mmdit.TEST_MMDIT).pos_embed.pos_embed, old.pos_embed.pos_embed)


def test_a_new_transformers_positions_tell_neighbouring_tokens_apart():
    cos = torch.nn.functional.cosine_similarity
    for arch in (mmdit.OFFLINE_MMDIT, dataclasses.replace(mmdit.OFFLINE_MMDIT, patch_size=1)):
        model = mmdit.new_transformer(arch)
        side = arch.image_size // 8  # latent pixels a side at the native size
        positions = model.pos_embed.cropped_pos_embed(side, side)[0]  # (tokens, D), row by row
        # diffusers' grid (a quarter unit a token) gave 0.999 and 0.91: tokens the attention could not tell apart
        assert cos(positions[0], positions[1], dim=0) < 0.99  # neighbours in a row
        assert cos(positions[0], positions[-1], dim=0) < 0.8  # opposite corners
    # a run started on diffusers' grid keeps it: the grid a checkpoint names, exactly as diffusers lays it
    legacy = dataclasses.replace(mmdit.TEST_MMDIT, position_unit=mmdit.DIFFUSERS_UNIT)
    latent = legacy.image_size // 8
    theirs = SD3Transformer2DModel(sample_size=latent, patch_size=2, num_layers=1, attention_head_dim=8,
                                   num_attention_heads=2, pos_embed_max_size=4 * latent // 2)
    assert torch.equal(mmdit.new_transformer(legacy).pos_embed.pos_embed, theirs.pos_embed.pos_embed)
    args = mmdit.argparse.Namespace(arch=mmdit.TEST_MMDIT, patch=None, run=None)
    old_state = {"arch": {k: v for k, v in dataclasses.asdict(mmdit.TEST_MMDIT).items() if k != "position_unit"}}
    assert mmdit.run_arch(old_state, args).position_unit == mmdit.DIFFUSERS_UNIT


def test_an_import_can_lay_the_positions_on_another_grid(exported, tmp_path):
    _, out = exported
    mmdit.main(["import", str(out), "--ckpt-dir", str(tmp_path), "--position-unit", str(mmdit.DIFFUSERS_UNIT)])
    state = torch.load(tmp_path / "mmdit.pt", weights_only=False)
    assert state["arch"]["position_unit"] == mmdit.DIFFUSERS_UNIT
    legacy = mmdit.new_transformer(dataclasses.replace(mmdit.TEST_MMDIT, position_unit=mmdit.DIFFUSERS_UNIT))
    torch.testing.assert_close(state["model"]["pos_embed.pos_embed"], legacy.pos_embed.pos_embed)


def test_an_export_imports_at_patch_1_trains_and_loads_through_the_app(exported, tmp_path):
    _, out = exported
    run = tmp_path / "patch1"
    mmdit.main(["import", str(out), "--ckpt-dir", str(run), "--patch", "1"])
    state = torch.load(run / "mmdit.pt", weights_only=False)
    assert state["arch"]["patch_size"] == 1 and state["model"]["proj_out.weight"].shape[0] == 4  # 1 x 1 x 4 channels
    mmdit.main(["train", "--steps", "1", "--batch", "2", "--ckpt-dir", str(run)])  # the run keeps its patch size
    assert torch.load(run / "mmdit.pt", weights_only=False)["step"] == state["step"] + 1
    with pytest.raises(SystemExit, match="patch size 1"):
        mmdit.main(["train", "--steps", "1", "--batch", "2", "--ckpt-dir", str(run), "--patch", "2"])
    mmdit.main(["export", str(tmp_path / "out"), "--ckpt-dir", str(run)])
    settings = tiny_settings(tmp_path / "out")
    model = load_model(settings)
    assert model.pipe.transformer.config.patch_size == 1
    # the positions it trained with travel with it (a persistent buffer), not the grid diffusers would build anew
    positions = model.pipe.transformer.pos_embed.pos_embed.float()
    torch.testing.assert_close(positions, state["ema_model"]["pos_embed.pos_embed"], atol=2e-3, rtol=0)
    rebuilt = mmdit.new_transformer(dataclasses.replace(mmdit.TEST_MMDIT, patch_size=1)).pos_embed.pos_embed
    assert not torch.allclose(positions, rebuilt, atol=0.1)
    assert json.loads((tmp_path / "out" / MARKER).read_text())["architecture"]["patch_size"] == 1
    req = GenerateRequest(prompt="a red circle on the left", seed=4, steps=2, scheduler="Flow Euler")
    engine = Engine(model, settings)
    image = engine.generate(req).images[0].array
    assert image.shape[:2] == (model.native_size, model.native_size)
    # the inspector's word maps: one cell a token, so a latent pixel a cell (twice the patch-2 maps' side)
    maps = engine.inspect(InspectRequest(base=req)).attention.stack(None, "all")
    assert maps.shape[-2:] == (model.native_size // 8, model.native_size // 8)


SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "offline-mmdit"


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="no exported MMDiT in assets/")
def test_the_shipped_mmdit_loads_and_draws_the_colours_and_backgrounds_it_is_asked_for(tmp_path):
    """assets/offline-mmdit through the app's loader: an SD3 at 128 px, one zero T5 token. A red shape on black and
    a blue one on white come out in those colours on those backgrounds, and not in each other's (its shapes are
    still blobs: docs/training.md)."""
    from playground.settings import Settings

    settings = Settings(model=str(SHIPPED), device="cpu", output_dir=tmp_path)
    model = load_model(settings)
    assert model.family.joint_attention and model.t5_tokens == 1 and model.native_size == 128 and model.trained
    engine = Engine(model, settings)

    def draw(prompt):
        return engine.generate(GenerateRequest(prompt=prompt, seed=1, steps=25, cfg_scale=5.0,
                                               scheduler="Flow Euler")).images[0].array

    def share(image, colour):
        r, g, b = image[..., 0], image[..., 1], image[..., 2]
        return float({"red": (r > 0.5) & (g < 0.35) & (b < 0.35), "blue": (b > 0.5) & (r < 0.35) & (g < 0.5),
                      "black": image.max(axis=-1) < 0.25, "white": image.min(axis=-1) > 0.8}[colour].mean())

    red = draw("a large red square at the top left on a black background")
    blue = draw("a large blue circle in the center on a white background")
    assert share(red, "red") > 0.05 and share(red, "black") > 0.2 and share(red, "blue") < 0.01
    assert share(blue, "blue") > 0.03 and share(blue, "white") > 0.3 and share(blue, "red") < 0.01


# ---------------------------------------------------------------- the latent cache and the grounding loss

def test_cached_latents_are_the_vaes_encoding_of_the_same_scenes(tmp_path):
    """The cache keeps each scene's posterior (mean, std) as the frozen VAE encodes it, and a cached batch is the
    sample `latent_dist.sample` gives for the same scenes and the same generator."""
    from playground.tiny import latents, world
    from playground.tiny.toolkit import to_tensor

    latents.build(tmp_path, scenes=6, shard=3)
    cache = latents.LatentCache(tmp_path)
    scenes = [world.sample(latents.FIRST_SEED + i) for i in range(6)]
    assert len(cache) == 6 and [s.caption for s in cache.scenes] == [s.caption for s in scenes]
    assert [s.objects for s in cache.scenes] == [s.objects for s in scenes]
    vae = mmdit.load_vae("cpu")
    with torch.no_grad():
        dist = vae.encode(to_tensor(s.image for s in scenes)).latent_dist
    # to float rounding (batches of another size, 1 or 2 threads: up to 3e-4 seen); a sample in the mean's place
    # is off by up to 0.6
    torch.testing.assert_close(cache.mean, dist.mean, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(cache.std, dist.std, atol=2e-3, rtol=1e-3)
    x, drawn = cache.draw(1, 4, torch.Generator().manual_seed(7))
    idx = cache.indices(1, 4)
    assert drawn == [cache.scenes[i] for i in idx]
    with torch.no_grad():
        again = vae.encode(to_tensor(scenes[i].image for i in idx))
    torch.testing.assert_close(x, again.latent_dist.sample(torch.Generator().manual_seed(7)), atol=2e-3, rtol=1e-3)


def test_the_cache_draws_every_scene_once_an_epoch_and_refuses_another_vae(tmp_path):
    from playground.tiny import latents

    latents.build(tmp_path, scenes=6, shard=3)
    cache = latents.LatentCache(tmp_path)
    epoch = [i for step in range(3) for i in cache.indices(step, 2)]
    assert sorted(epoch) == list(range(6)) and cache.indices(3, 2) + cache.indices(4, 2) != epoch[:4]
    other = tmp_path / "other-vae"
    other.mkdir()
    (other / "diffusion_pytorch_model.safetensors").write_bytes(b"not the same weights")
    with pytest.raises(ValueError, match="another VAE"):
        latents.LatentCache(tmp_path, other)


def test_training_on_cached_latents_with_the_grounding_loss_resumes(tmp_path):
    from playground.tiny import latents

    latents.build(tmp_path / "latents", scenes=4, shard=4)
    args = ["train", "--test-size", "--batch", "4", "--ckpt-dir", str(tmp_path / "run"), "--latents",
            str(tmp_path / "latents"), "--ground", "0.5"]
    mmdit.main([*args, "--steps", "2"])
    mmdit.main([*args, "--steps", "1"])
    assert torch.load(tmp_path / "run" / "mmdit.pt", weights_only=False)["step"] == 3


def test_the_joint_capture_records_each_layers_text_attention_and_changes_nothing():
    from playground.tiny.vocab import build_tokenizer

    arch, tokenizer = mmdit.TEST_MMDIT, build_tokenizer()
    model, texts = mmdit.new_transformer(arch), [mmdit.new_text_encoder(arch, tokenizer) for _ in range(2)]
    context, pooled = mmdit.encode(tokenizer, texts, ["a red circle on the left"], arch.t5_tokens, "cpu")
    x = torch.randn(1, 4, 16, 16)
    kwargs = dict(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=context,
                  pooled_projections=pooled)
    with torch.no_grad():
        plain = model(**kwargs).sample
        capture = mmdit.JointCapture(model, tokenizer.model_max_length)
        with capture.active() as probs:
            recorded = model(**kwargs).sample
    assert torch.equal(plain, recorded) and len(probs) == arch.layers
    assert all(p.shape == (1, 64, tokenizer.model_max_length) for p in probs)
    assert not any("Recorded" in type(m.processor).__name__ for _, m in capture.layers)
