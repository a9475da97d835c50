"""Links to experiments: every tab's settings written in the page's address and read back, checked like API input;
an unknown name or a bad value is named while the rest applies."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest

from playground import links
from playground.limits import Limits
from playground.settings import ASSETS

pytestmark = pytest.mark.nomodel

UNET, MMDIT = "playground-offline", "playground-offline-mmdit"
LIMITS = {UNET: Limits(native_size=128, channels=4),
          MMDIT: Limits(native_size=128, scheduler_kind="flow", shift=True, joint_attention=True, family="SD3",
                        channels=16)}
POSE = json.dumps(json.loads((ASSETS / "poses" / "waving.json").read_text()), separators=(",", ":"))

# one link's settings per tab, every setting the tab takes, none at its "off" value
EXAMPLES = {
    "prompt": dict(prompt="a red square on the left", negative_prompt="blue", seed=7, steps=20, cfg_scale=3.0,
                   scheduler="DPM++ 2M Karras", width=128, height=96, num_images=2, shift=0.0, refiner_start=0.0,
                   skip_layer_guidance=0.0, model=UNET, cfg_stop=0.6),
    "grid": dict(prompt="a large red square at the top left", negative_prompt="", seed=7, steps=12,
                 schedulers=["Euler", "DDIM"], columns="1, 3, 7.5", width=128, height=128, axis="cfg", cfg_scale=3.0,
                 models=[UNET]),
    "controlnet": dict(mode=links.MODE_LABELS["pose"], controlnet="openpose", low=50, high=150, resize="pad",
                       conditioning_scale=0.8, guidance_start=0.1, guidance_end=0.9, prompt="a green person waving",
                       negative_prompt="", seed=3, steps=15, cfg_scale=3.0, scheduler="DDIM", width=128, height=128,
                       num_images=1, detector="auto", hands=True, face=False, pose=POSE, model=UNET),
    "walk": dict(prompt="a red square", negative_prompt="", seed=1, steps=10, cfg_scale=3.0, scheduler="Euler",
                 width=128, height=128, between="seeds", to_prompt="a blue circle", to_seed=9, frames_count=6,
                 shift=0.0, model=UNET),
    "inspector": dict(prompt="a red square on the left and a blue circle", negative_prompt="", seed=7, steps=20,
                      cfg_scale=3.0, scheduler="DDIM", width=128, height=128, attention_of="prompt",
                      refiner_start=0.0, model=UNET),
}


def query_of(link: str) -> dict[str, str]:
    assert link.startswith("?")
    return dict(parse_qsl(link[1:], keep_blank_values=True))


def test_every_tab_with_settings_has_an_example():
    assert {k for k, p in links.PAGES.items() if p.settings} == set(EXAMPLES)


@pytest.mark.parametrize("tab", sorted(EXAMPLES))
def test_a_link_reads_back_as_written(tab):
    values = EXAMPLES[tab]
    link = links.parse(query_of(links.write(tab, values)), LIMITS)
    assert link.notes == [] and link.tab == tab
    # every setting comes back (those at their "off" value are left out of the link, and so of what it sets)
    omitted = {s.name for s in links.PAGES[tab].settings if s.omit is not None and values[s.name] == s.omit}
    assert link.values == {k: v for k, v in values.items() if k not in omitted}
    assert links.write(tab, link.values) == links.write(tab, values)


def test_a_link_is_readable_and_keeps_plus_and_spaces():
    link = links.write("grid", dict(prompt="a red square", seed=7, schedulers=["DPM++ 2M", "DDIM"], columns="1,3,7.5"))
    assert link == "?tab=grid&prompt=a%20red%20square&seed=7&schedulers=DPM%2B%2B%202M,DDIM&columns=1,3,7.5"
    assert links.parse(query_of(link), LIMITS).values["schedulers"] == ["DPM++ 2M", "DDIM"]


def test_tabs_without_settings_open_by_name():
    for tab in ("lesson", "anatomy"):
        assert links.write(tab, {}) == f"?tab={tab}"
        assert links.parse({"tab": tab}, LIMITS) == links.Link(tab=tab)


def test_unknown_names_and_bad_values_are_named_and_the_rest_applies():
    link = links.parse({"tab": "grid", "prompt": "a red square", "seed": "seven", "steps": "500", "bogus": "1",
                        "schedulers": "Euler,Nope", "columns": "1,3", "cfg_scale": "3"}, LIMITS)
    assert link.tab == "grid"
    assert link.values == {"prompt": "a red square", "columns": "1,3", "cfg_scale": 3.0}
    said = "\n".join(link.notes)
    assert len(link.notes) == 4
    assert "seed must be a number, got 'seven'" in said
    assert "steps must be an integer from 1 to 100, got 500" in said
    assert "unknown setting 'bogus'" in said and "unknown scheduler 'Nope'" in said


def test_values_are_checked_with_the_chosen_model_and_the_others_already_read():
    # a flow scheduler fits the MMDiT named in the same link, not the first model
    assert links.parse({"tab": "prompt", "model": MMDIT, "scheduler": "Flow Euler", "shift": "3"}, LIMITS).notes == []
    wrong = links.parse({"tab": "prompt", "scheduler": "Flow Euler", "shift": "3", "seed": "4"}, LIMITS)
    assert wrong.values == {"seed": 4} and len(wrong.notes) == 2
    assert "does not fit this model" in wrong.notes[0] and "flow-matching" in wrong.notes[1]
    # the grid's axis is read before its columns: 80 steps is a step count, not a CFG scale over the limit
    assert links.parse({"tab": "grid", "columns": "5,80", "axis": "steps"}, LIMITS).notes == []
    assert "80" in links.parse({"tab": "grid", "columns": "5,80"}, LIMITS).notes[0]
    # the negative prompt's attention needs guidance
    bad = links.parse({"tab": "inspector", "attention_of": "negative", "cfg_scale": "1"}, LIMITS)
    assert bad.values == {"attention_of": "negative"} and "CFG scale other than 1" in bad.notes[0]


def test_a_grid_of_both_models_checks_each_models_rows():
    ok = links.parse({"tab": "grid", "models": f"{UNET},{MMDIT}", "schedulers": "DDIM,Flow Euler",
                      "axis": "steps", "columns": "5,10"}, LIMITS)
    assert ok.notes == [] and ok.values["models"] == [UNET, MMDIT]
    bad = links.parse({"tab": "grid", "models": f"{UNET},nope"}, LIMITS)
    assert "models" not in bad.values and "nope" in bad.notes[0]


def test_labels_are_read_as_their_keys_and_the_control_mode_as_its_label():
    assert links.parse({"tab": "grid", "axis": "Steps"}, LIMITS).values == {"axis": "steps"}
    assert links.parse({"tab": "controlnet", "mode": "pose", "pose": POSE}, LIMITS).values["mode"] == \
        links.MODE_LABELS["pose"]  # the tab's radio shows labels
    link = links.parse({"tab": "controlnet", "image": "photo.png", "hands": "maybe", "controlnet": "openpose"}, LIMITS)
    assert link.values == {"controlnet": "openpose"}
    assert any("carries no image" in n for n in link.notes) and any("true or false" in n for n in link.notes)


def test_a_missing_or_unknown_tab_is_named():
    assert links.parse({}, LIMITS) == links.Link()
    assert "unknown tab 'nope'" in links.parse({"tab": "nope", "seed": "1"}, LIMITS).notes[0]
    assert "name no tab" in links.parse({"seed": "1"}, LIMITS).notes[0]
    assert links.parse({"tab": "Grid"}, LIMITS).tab == "grid"


@pytest.mark.parametrize("text", ["nan", "inf", "1e400", "", " ", "0x10", "--1"])
def test_numbers_that_are_not_numbers_are_named(text):
    link = links.parse({"tab": "prompt", "seed": text, "cfg_scale": text, "prompt": "kept"}, LIMITS)
    assert link.values == {"prompt": "kept"} and len(link.notes) == 2


def test_a_hand_written_list_may_have_spaces_and_a_trailing_comma():
    link = links.parse({"tab": "grid", "schedulers": " Euler , DDIM,", "models": f"{UNET} "}, LIMITS)
    assert link.notes == [] and link.values == {"schedulers": ["Euler", "DDIM"], "models": [UNET]}
