"""Every model family runs every tab's action through the same doors, on tiny random-weight models loaded the app's
way: SD 1.x (the offline U-Net's shape), SDXL and SD3 (an MMDiT). What differs is asked of the family entry, so the
checks below read the entry's capabilities rather than its name."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_settings
from playground import schedulers
from playground.engine import ACTIONS, Engine
from playground.families import FAMILIES
from playground.loading import load_model
from playground.poses import presets
from playground.schema import (
    ControlRequest, GenerateRequest, GridRequest, InspectRequest, PoseRequest, RoundTripRequest, TokenRequest,
    WalkRequest,
)

pytestmark = pytest.mark.tiny

FAMILY_DIRS = {"StableDiffusionPipeline": "tiny_dir", "StableDiffusionXLPipeline": "tiny_sdxl_dir",
               "StableDiffusion3Pipeline": "tiny_sd3_dir"}


def test_every_family_is_in_this_test():
    assert set(FAMILY_DIRS) == set(FAMILIES)


def controlnet_for(model, out):
    """A tiny ControlNet of the family's own class, made from its denoiser and saved where the settings name it."""
    from diffusers import ControlNetModel, SD3ControlNetModel

    torch.manual_seed(1)
    if model.family.controlnet_class == "SD3ControlNetModel":
        net = SD3ControlNetModel.from_transformer(copy.deepcopy(model.pipe.transformer), num_layers=1,
                                                  num_extra_conditioning_channels=0)
    else:
        # three downsamplings of the map: the VAE's factor 8
        net = ControlNetModel.from_unet(model.pipe.unet, conditioning_embedding_out_channels=(4, 4, 8, 8))
    net.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module", params=list(FAMILY_DIRS))
def engine(request, tmp_path_factory):
    folder = request.getfixturevalue(FAMILY_DIRS[request.param])
    model = load_model(tiny_settings(folder))
    net = controlnet_for(model, tmp_path_factory.mktemp("controlnet") / "canny")
    return Engine(model, tiny_settings(folder, controlnets={"canny": net}), batcher=False)


def base(engine: Engine, **changes) -> GenerateRequest:
    req = GenerateRequest(prompt="a red circle", seed=3, steps=2, scheduler=engine.model.family.default_scheduler,
                          width=64, height=64)
    return GenerateRequest(**{**req.__dict__, **changes})


def test_the_limits_state_the_family_capabilities(engine):
    family, limits = engine.model.family, engine.limits
    assert limits.family == family.name and limits.scheduler_kind == family.schedulers
    assert limits.schedulers == schedulers.fitting(family.schedulers)
    assert (limits.shift, limits.joint_attention) == (family.shift, family.joint_attention)
    assert bool(limits.skip_layers) == family.skip_layer_guidance
    assert limits.channels == engine.components.denoiser.config.in_channels
    # what the entry says of its text encoders and denoiser holds of the loaded model
    c = engine.components
    windows = [t.model_max_length for t in family.tokenizers(c)]
    assert [w for name, w in family.text_encoders if "CLIP" in name] == windows
    mmdit = type(c.denoiser).__name__ == "SD3Transformer2DModel"
    assert (family.denoiser == "MMDiT") == family.joint_attention == mmdit


def test_generate_grid_and_walk(engine):
    made = engine.generate(base(engine))
    assert made.images[0].image.size == (64, 64) and made.request.model == engine.model.name
    scheduler = engine.limits.schedulers[0]
    grid = engine.grid(GridRequest(base=base(engine), schedulers=(scheduler,), columns="1, 5"))
    assert [len(row) for row in grid.cells] == [2]
    # the first column is the prompt tab's picture at CFG 1, from the same seed's noise
    alone = engine.generate(base(engine, scheduler=scheduler, cfg_scale=1.0)).images[0].array
    assert np.abs(grid.cells[0][0].generated.array - alone).max() <= 1 / 255
    walk = engine.walk(WalkRequest(base=base(engine), to_prompt="a blue square", frames=2))
    assert len(walk.frames) == 2 and walk.mix == [0.0, 1.0]


def test_inspect_and_attention(engine):
    traj = engine.inspect(InspectRequest(base=base(engine)))
    assert traj.tensors["x_t"].shape[1] == engine.limits.channels and traj.attention is not None
    assert traj.flow == (engine.model.family.prediction == "flow_prediction")
    _, view = engine.attention(InspectRequest(base=base(engine), word="red"))
    assert view.token == "red"


def test_control_and_its_maps(engine):
    photo = Image.new("RGB", (64, 64), "white")
    photo.paste((200, 0, 0), (16, 16, 48, 48))
    steered = engine.control(ControlRequest(image=photo, base=base(engine)))
    assert steered.images[0].image.size == (64, 64) and steered.control_map.size == (64, 64)
    assert np.asarray(engine.preprocess(ControlRequest(image=photo, base=base(engine)))).max() == 255  # an edge
    drawn, pose = engine.draw_pose(PoseRequest(next(iter(presets().values())).read_text(), 64, 64, mirror=True))
    assert drawn.size == (64, 64) and pose


def test_round_trip_and_token_count(engine):
    trip = engine.roundtrip(RoundTripRequest(Image.new("RGB", (64, 64), "red")))
    assert trip.latent_shape[0] == engine.limits.channels
    count = engine.count_tokens(TokenRequest("a red circle"))
    assert count.used == 5 and count.limit == 77 and count.encoders == len(engine.model.family.tokenizers(
        engine.components))


def test_every_action_is_covered_here():
    """The tests above run each action of the Engine (grid_evaluations through the grid's cost, below)."""
    assert ACTIONS.keys() - {"detect_pose", "grid_evaluations"} == {
        "generate", "grid", "walk", "inspect", "attention", "control", "preprocess", "draw_pose", "roundtrip",
        "count_tokens"}


def test_the_grid_cost_counts_each_row(engine):
    scheduler = engine.limits.schedulers[0]
    cost = engine.grid_evaluations(GridRequest(base=base(engine), schedulers=(scheduler,), columns="1, 5"))
    assert list(cost) == [scheduler] and cost[scheduler] >= 2
