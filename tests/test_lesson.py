"""The Lesson tab on the tiny random-weight model: every link it gives opens its experiment with no note, each
exercise's endpoint answers with the figures playground.exercises gives for the same inputs, and every tab's link
is applied when the page loads and written by its button."""

from __future__ import annotations

import inspect
import re
from types import SimpleNamespace
from urllib.parse import parse_qsl

import gradio as gr
import pytest

from conftest import tiny_settings
from playground import exercises, links
from playground.engine import Engine
from playground.models import Models
from playground.schema import GenerateRequest, GridRequest, InspectRequest
from playground.ui import build_app

pytestmark = pytest.mark.tiny


@pytest.fixture(scope="module")
def app(tiny_model, tiny_dir):
    settings = tiny_settings(tiny_dir, grid_reference_steps=60, cache_hours=0)
    models = Models([Engine(tiny_model, settings)])
    return build_app(models, settings), models


@pytest.fixture(scope="module")
def short_app(tiny_model, tiny_dir):
    """The app with fewer steps allowed and a shorter reference run: the steps exercise's columns 5, 10 and 20."""
    settings = tiny_settings(tiny_dir, grid_reference_steps=30, max_steps=25, cache_hours=0)
    models = Models([Engine(tiny_model, settings)])
    return build_app(models, settings), models


def endpoint(demo: gr.Blocks, name: str):
    return next(f for f in demo.fns.values() if f.api_name == name)


def last(result):
    """A handler's answer: the last item of a generator, or its return value."""
    if inspect.isgenerator(result):
        items = list(result)
        return items[-1]
    return result


def silent(*args, **kwargs):
    return None


def lesson_links(demo: gr.Blocks) -> list[str]:
    lesson_tab = next(b for b in demo.blocks.values() if isinstance(b, gr.Tab) and b.id == "lesson")
    found = []
    for block in demo.blocks.values():
        parent = block
        while parent is not None and parent is not lesson_tab:
            parent = parent.parent
        if parent is lesson_tab and isinstance(block, gr.Markdown) and block.value:
            found += re.findall(r"\]\((\?tab=[^)\s]+)\)", block.value)
    return found


def query_of(link: str) -> dict[str, str]:
    return dict(parse_qsl(link[1:], keep_blank_values=True))


def test_the_lesson_tab_comes_first_and_every_tab_has_its_link_row(app):
    demo, _ = app
    tabs = next(b for b in demo.blocks.values() if isinstance(b, gr.Tabs) and b.parent is demo)
    assert [t.id for t in tabs.children] == ["lesson", "prompt", "grid", "controlnet", "walk", "inspector", "anatomy"]
    for tab in tabs.children:
        row = tab.children[0]
        assert isinstance(row, gr.Row) and row.children[0].value == "Link to these settings"


def test_every_link_names_the_endpoints_own_parameters(app):
    demo, _ = app
    for page in links.PAGES.values():
        if page.endpoint and page.settings:
            params = [p for p in inspect.signature(endpoint(demo, page.endpoint).fn).parameters if p != "progress"]
            assert set(page.names) | set(page.no_link) == set(params), page.key


def test_every_lesson_link_opens_its_experiment_without_a_note(app):
    demo, models = app
    found = lesson_links(demo)
    tabs = {query_of(q)["tab"] for q in found}
    assert len(found) >= 8 and {"inspector", "prompt", "grid", "controlnet", "anatomy"} <= tabs
    limits = {n: e.limits for n, e in models.engines.items()}
    for q in found:
        link = links.parse(query_of(q), limits)
        assert link.notes == [], (q, link.notes)
        assert len(link.values) == len(query_of(q)) - 1


def test_the_compression_exercise_answers_with_the_exercises_figures(app):
    demo, models = app
    table, text = endpoint(demo, "lesson_compression").fn("")
    want = exercises.compression(8, models.first.limits.channels)
    assert list(table["size (px)"]) == [256, 512, 768, 1024]
    assert list(table["pixel numbers"]) == [c.pixel_numbers for c in want]
    assert list(table["latent numbers"]) == [c.latent_numbers for c in want]
    assert list(table["ratio"]) == [48.0] * 4
    assert list(table["50-step latent runs per pixel run"]) == [c.latent_runs for c in want]
    assert list(table["float32 saved (MB)"]) == [round(c.saved_bytes / 2**20, 2) for c in want]
    assert table["latent"][1] == "64x64x4" and "48x" in text


def test_the_cfg_exercise_answers_with_the_exercises_figures(app):
    demo, models = app
    name = models.first.model.name
    table, frame, text = last(endpoint(demo, "lesson_cfg").fn("a red square", 7, 4, 2, 3.0, name, progress=silent))
    traj = models.inspect(InspectRequest(GenerateRequest(prompt="a red square", seed=7, steps=4, cfg_scale=3.0,
                                                         model=name), "off"))
    want = exercises.cfg_response(traj.tensors["out_uncond"][1], traj.tensors["out_cond"][1])
    assert list(table["CFG scale"]) == list(exercises.CFG_SCALES)
    assert list(table["|guided| / |cond|"]) == [round(r.norm_ratio, 3) for r in want.rows]
    assert list(table["cosine to (cond - uncond)"]) == [round(r.cosine, 4) for r in want.rows]
    assert len(frame) == 3 * 20 and set(frame["measure"]) == {"cosine", "|guided| / |cond|", "amplification"}
    said = f"CFG {want.passes_3x:g}" if want.passes_3x is not None else "stays under 3x"
    assert said in text and "step 2 of 4" in text


def test_the_cfg_exercise_names_a_step_outside_the_run(app):
    demo, _ = app
    with pytest.raises(gr.Error, match="step to measure"):
        last(endpoint(demo, "lesson_cfg").fn("a red square", 7, 4, 9, 3.0, "", progress=silent))


def test_the_steps_exercise_marks_the_knee_of_the_grids_errors(short_app):
    demo, models = short_app
    name = models.first.model.name
    table, frame, text = last(endpoint(demo, "lesson_steps").fn("a red square", 7, "DDIM", 3.0, name, progress=silent))
    counts = tuple(n for n in exercises.STEP_COUNTS if n <= models.first.limits.max_steps)
    grid = models.grid(GridRequest(base=GenerateRequest(prompt="a red square", seed=7, cfg_scale=3.0, model=name),
                                   schedulers=("DDIM",), columns=tuple(map(float, counts)), axis="steps"))
    errors = [(int(c.value), c.latent_rms) for c in grid.cells[0]]
    assert list(table["steps"]) == list(counts)
    assert list(table["model: latent RMS vs reference"]) == [round(e, 5) for _, e in errors]
    toy = exercises.toy_step_errors(counts)
    assert list(table["toy: RMS vs reference"]) == [round(e, 6) for _, e in toy]
    knee = exercises.knee(errors)
    assert (f"knee is at **{knee} steps**" if knee is not None else "no knee") in text
    assert "discretisation" in text and "30-step run" in text
    assert set(frame["series"]) == {name, "1-D toy, perfect predictor"}


def load_handlers(demo: gr.Blocks):
    named = {getattr(f.fn, "__name__", ""): f for f in demo.fns.values()}
    return named["on_load_first"], named["on_load_follow"], named["on_load_rest"]


def applied(demo: gr.Blocks, query: dict) -> tuple[list, dict]:
    """What the page load's three stages set for `query`: the first stage's answer, and every output's value."""
    request = SimpleNamespace(query_params=query)
    answers = [(f, f.fn(request)) for f in load_handlers(demo)]
    return answers[0][1], {c: v for f, out in answers for c, v in zip(f.outputs, out)}


def test_a_link_is_applied_when_the_page_loads(app):
    demo, _ = app
    query = {"tab": "grid", "prompt": "a blue ring", "seed": "7", "columns": "5,10", "axis": "steps",
             "steps": "999", "nope": "1"}
    first, values = applied(demo, query)
    assert first[0].selected == "grid"
    note = next(v for v in values.values() if isinstance(v, str) and v.startswith("Opened from a link"))
    assert "steps must be an integer" in note and "unknown setting 'nope'" in note
    grid = endpoint(demo, "grid")
    inputs = dict(zip(inspect.signature(grid.fn).parameters, grid.inputs))
    assert values[inputs["axis"]].value == "steps"
    assert values[inputs["prompt"]] == "a blue ring" and values[inputs["seed"]] == 7
    assert values[inputs["columns"]] == "5,10"
    assert values[inputs["steps"]] == gr.skip()  # the bad value is left as the tab had it


def test_a_page_without_a_link_changes_nothing(app):
    demo, _ = app
    _, values = applied(demo, {})
    assert all(v == gr.skip() for v in values.values())


def test_each_tabs_button_writes_the_link_to_its_settings(app):
    demo, models = app
    writers = [f for f in demo.fns.values() if f.outputs and isinstance(f.outputs[0], gr.Textbox)
               and "settings-link" in (f.outputs[0].elem_classes or []) and f.fn is not None]
    assert len(writers) == len(links.PAGES)
    grid = endpoint(demo, "grid")
    writer = next(f for f in writers if f.inputs and f.inputs[0] is grid.inputs[0])
    values = ["a red square", "", 7, 12, ["DDIM"], "1, 3", 64, 64, "cfg", 3.0, []]
    written = writer.fn(*values)
    assert written.startswith("?tab=grid&prompt=a%20red%20square&negative_prompt=&seed=7&steps=12&schedulers=DDIM")
    limits = {n: e.limits for n, e in models.engines.items()}
    assert links.parse(query_of(written), limits).values["schedulers"] == ["DDIM"]
