"""Lesson tab: the lesson's ideas in order, each with links that open its experiment (the right tab, its settings
filled in) and what to look for; the lesson's three exercises answered on the loaded model (the VAE's compression,
what CFG does to the prediction, the step count's knee); and the page-address links of every tab: a "Link to these
settings" row at the top of each tab, and the page-load handler that applies a link (playground/links.py reads it).
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass
from typing import Callable

import gradio as gr
import pandas as pd

from playground import exercises, links
from playground.errors import InvalidRequest
from playground.axes import AXES
from playground.models import Models
from playground.poses import presets
from playground.limits import Limits
from playground.schema import GenerateRequest, GridRequest, InspectRequest, Progress
from playground.settings import Settings
from playground.ui.common import heavy, running, shows_errors, status_line, stream
from playground.ui.fields import Fields

COMPRESSION_HEADERS = ["size (px)", "pixel numbers", "latent", "latent numbers", "ratio", "float32 saved (MB)",
                       "50-step latent runs per pixel run"]
CFG_HEADERS = ["CFG scale", "cosine to (cond - uncond)", "|guided| / |cond|", "amplification |guided - cond| / |cond|"]
STEPS_HEADERS = ["steps", "model: latent RMS vs reference", "model: cut by doubling", "toy: RMS vs reference",
                 "toy: cut by doubling"]
# the copy button's script: the query the server wrote becomes the page's full address, copied where allowed
COPY_JS = """(q) => {
  if (!q || !q.startsWith("?")) return q;
  const url = window.location.origin + window.location.pathname + q;
  try { navigator.clipboard.writeText(url).catch(() => {}); } catch (e) {}
  return url;
}"""
SETTLE_SECONDS = 1.0  # after a link's model (its axis) is set, the form's own follow-ups run before the next settings
MODEL_SETTINGS = ("model", "models")  # a link applies these first: the form follows the model it names


# -- the exercises' figures, as tables ----------------------------------------------------------
def compression_table(factor: int, channels: int) -> pd.DataFrame:
    rows = [[c.size, c.pixel_numbers, f"{c.size // factor}x{c.size // factor}x{channels}", c.latent_numbers,
             round(c.ratio, 2), round(c.saved_bytes / 2**20, 2), c.latent_runs]
            for c in exercises.compression(factor, channels)]
    return pd.DataFrame(rows, columns=COMPRESSION_HEADERS)


def compression_text(name: str, factor: int, channels: int) -> str:
    ratio = exercises.compression(factor, channels)[0].ratio
    return (f"**{name}**: its VAE divides each side by **{factor}** and keeps **{channels} channels**, so an image "
            f"has **{ratio:g}x** more numbers than its latent at every size (3·{factor}² / {channels}). SD 1.x and "
            "SDXL: 48x; SD3's 16 channels: 12x. The last column is how many 50-step latent runs (every step's state "
            "kept) fit in the memory of one such run in pixel space.")


def cfg_table(response: exercises.GuidanceResponse) -> pd.DataFrame:
    rows = [[r.scale, round(r.cosine, 4), round(r.norm_ratio, 3), round(r.amplification, 3)] for r in response.rows]
    return pd.DataFrame(rows, columns=CFG_HEADERS)


def cfg_frame(response: exercises.GuidanceResponse) -> pd.DataFrame:
    """Long form for the plot: one row per scale and measure."""
    rows = [{"CFG scale": r.scale, "value": v, "measure": m} for r in response.rows
            for m, v in (("cosine", r.cosine), ("|guided| / |cond|", r.norm_ratio), ("amplification", r.amplification))]
    return pd.DataFrame(rows, columns=["CFG scale", "value", "measure"])


def cfg_text(response: exercises.GuidanceResponse, step: int, steps: int) -> str:
    over = (f"the guided prediction first passes **3x** the conditional one at **CFG {response.passes_3x:g}**"
            if response.passes_3x is not None else "the guided prediction stays under 3x the conditional one up to 20")
    first, last = response.rows[0], response.rows[-1]
    return (f"At step {step} of {steps}: {over}. The cosine to the conditional direction (cond − uncond) goes from "
            f"{first.cosine:.3f} at CFG 1 to {last.cosine:.3f} at 20, and the guided prediction's norm is "
            f"{last.norm_ratio:.2f}x the conditional one at 20: a large scale points the step along what the prompt "
            "adds and makes it longer than any prediction the model gives itself, which is what over-saturates the "
            "picture.")


def steps_table(model: list[tuple[int, float]], toy: list[tuple[int, float]]) -> pd.DataFrame:
    cuts, toy_cuts = [None, *exercises.halvings(model)], [None, *exercises.halvings(toy)]
    toy_of = dict(toy)
    toy_cut = {n: c for (n, _), c in zip(sorted(toy), toy_cuts)}
    rows = [[n, round(e, 5), None if c is None else f"{c:.0%}", round(toy_of[n], 6) if n in toy_of else None,
             None if toy_cut.get(n) is None else f"{toy_cut[n]:.0%}"] for (n, e), c in zip(sorted(model), cuts)]
    return pd.DataFrame(rows, columns=STEPS_HEADERS)


def steps_frame(model: list[tuple[int, float]], toy: list[tuple[int, float]], name: str) -> pd.DataFrame:
    """Each error as a share of its 5-step one, so the model's and the toy's fall compare on one axis."""
    rows = []
    for series, errors in ((name, model), ("1-D toy, perfect predictor", toy)):
        start = sorted(errors)[0][1] or 1.0
        rows += [{"steps": float(n), "error / first error": e / start, "series": series} for n, e in sorted(errors)]
    return pd.DataFrame(rows, columns=["steps", "error / first error", "series"])


def steps_text(model: list[tuple[int, float]], toy: list[tuple[int, float]], scheduler: str, reference: int) -> str:
    knee, toy_knee = exercises.knee(model), exercises.knee(toy)
    said = (f"the knee is at **{knee} steps**: doubling to {2 * knee} cuts the error by less than 10%"
            if knee is not None else "every doubling still cuts the error by 10% or more: no knee in these counts")
    cuts = exercises.halvings(toy)
    toy_said = (f"a knee at {toy_knee} steps" if toy_knee is not None else
                f"no knee: each doubling cuts its error by {min(cuts):.0%} to {max(cuts):.0%}")
    return (f"**{scheduler}** against its own {reference}-step run from the same noise: {said}. The 1-D toy beside it "
            f"(data at −1 and +1, a perfect noise predictor, DDIM) has {toy_said}. Its predictor makes no error, so "
            "the toy's error is the ODE's discretisation alone (DDIM's first-order steps roughly halve it at each "
            "doubling); the model's curve adds its own errors, and flattens where they, not the steps, are left.")


# -- the lesson -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    title: str
    text: str  # a few sentences (markdown)
    experiments: tuple[tuple[str, str], ...]  # (words, link query)
    look_for: str
    sd15: str  # what changes on SD 1.5


def lesson_parts(fields: Fields, limits: Limits, reference: int) -> list[Part]:
    """The lesson's parts, with links to the loaded models' experiments (their own prompts and schedulers)."""
    m = fields.models[0]
    name, examples = m.name, list(m.examples) or ["a red square"]
    two = m.attention_example or examples[-1]
    one = examples[0]
    person = next((e for e in examples if "person" in e), one)
    ddim = "DDIM" if "DDIM" in m.schedulers else m.default_scheduler
    second = next((s for s in ("DPM++ 2M Karras", "Euler") if s in m.schedulers), m.schedulers[-1])
    euler = "Euler" if "Euler" in m.schedulers else m.schedulers[0]
    cfg = m.cfg_scale
    steps_cols = ",".join(str(n) for n in (5, 10, 20, 40) if n <= limits.max_steps)
    files = presets()
    pose_file = files.get("arms-raised") or next(iter(files.values()), None)
    pose = json.dumps(json.loads(pose_file.read_text()), separators=(",", ":")) if pose_file else ""
    size = m.native_size
    both = [f.name for f in fields.models]
    parts = [
        Part("1. The latent space and the VAE's 48x",
             f"Diffusion does not run on pixels. The VAE's encoder turns an image of {size}×{size}×3 numbers into a "
             f"latent of {size // 8}×{size // 8}×{m.channels}: each side divided by 8, 4 channels instead of 3 "
             "colours, **48x fewer numbers**. Every denoising step runs on the small one; the decoder paints pixels "
             "once, at the end.",
             (("Open the inspector on one shape", links.write("inspector", dict(
                 prompt=one, seed=7, steps=20, cfg_scale=cfg, model=name))),),
             "the four channel maps of the final latent (each a blurry map of the picture) and the noisy latent x_t "
             "becoming the predicted x0; then the inspector's **VAE round trip** tab for what the decoder gives back.",
             "512×512×3 pixels become 64×64×4 latents: the same 48x, on 16 times the pixels of the bundled "
             "models."),
        Part("2. CLIP's tokens and the 77 limit",
             "The text encoder reads tokens, not words, in a fixed window of 77 (its start and end tokens included). "
             "Whatever falls past the window is never read; a word the tokenizer cuts into pieces takes several.",
             (("Open the Prompt tab with a long prompt", links.write("prompt", dict(
                 prompt=" and ".join([two] * 4), seed=7, steps=20, cfg_scale=cfg, model=name))),),
             "the token counter under the prompt box: how many tokens of 77 the prompt takes, and the words past the "
             "window named as dropped; a word the bundled model never saw (\"cat\") is named too.",
             "SD 1.5 reads the same 77-token CLIP window; SDXL two CLIPs, each 77; SD3 adds T5 with 256 or 512."),
        Part("3. Cross-attention: which word paints where",
             "At every step each latent position asks every token of the prompt for information (cross-attention); "
             "the shares add up to 1. Recording them shows which word paints which part of the picture.",
             (("Open the inspector on two shapes", links.write("inspector", dict(
                 prompt=two, seed=7, steps=20, cfg_scale=cfg, attention_of="prompt", model=name))),),
             "after **Generate and record**, click the word chips: the colour and shape words light their own object, "
             "the background words the rest; the start token takes the largest share. Drag the step slider to watch "
             "a map form.",
             "SD 1.5's maps are 64×64 at most and sharper, from 16 cross-attention layers at four resolutions."),
        Part("4. Classifier-free guidance and the negative prompt",
             "The model predicts twice, with the prompt and without it (or with the negative prompt), and the "
             "scheduler steps with uncond + CFG × (cond − uncond): the scale multiplies what the prompt adds. A "
             "negative prompt takes the unconditional side, so guidance pushes away from it.",
             (("Open a CFG grid", links.write("grid", dict(
                 prompt=one, seed=7, steps=20, schedulers=[ddim], axis="cfg", columns="0, 1, 3, 7.5, 12",
                 cfg_scale=cfg, models=[name]))),
              ("Open the Prompt tab with a negative prompt", links.write("prompt", dict(
                  prompt=one, negative_prompt="red", seed=7, steps=20, cfg_scale=cfg, model=name)))),
             f"CFG 1 is the prompt alone; 0 what the negative prompt asks for; {cfg:g} the bundled U-Net's own scale; "
             "7.5 and 12 over-saturate and break up. With \"red\" as the negative prompt, the red shape loses its red. "
             "The exercise below measures it on the model's own predictions.",
             "SD 1.5's usual scale is 7.5, and it over-saturates well past that."),
        Part("5. Schedulers and step counts (DDIM, DPM-Solver++, Euler)",
             "A scheduler turns the model's predictions into a path from noise to picture: DDIM takes first-order "
             "steps, DPM-Solver++ (2M) second-order ones, Euler steps the noise level directly. More steps follow "
             "the path more closely, and past some count each doubling buys little.",
             (("Open a steps grid", links.write("grid", dict(
                 prompt=one, seed=7, schedulers=[ddim, second, euler], axis="steps", columns=steps_cols,
                 cfg_scale=cfg, models=[name]))),),
             f"the distance plot: each cell against a {reference}-step run of its own scheduler from the same noise; "
             "the second-order scheduler is closer at 20 steps, and the noise-level plot shows where each spends "
             "its steps. The exercise below finds the knee.",
             "the same shapes of curves at 512 px, each step a pass of an 860M U-Net over 64×64 latents."),
        Part("6. ControlNet and its zero convolutions",
             "A ControlNet is a trained copy of the U-Net's encoder that reads a map (edges, a pose) and adds its "
             "features to the U-Net's through **zero convolutions**: initialised at zero, so before training it "
             "changes nothing, and it learns to steer without harming what the model knew.",
             (("Open the ControlNet tab with a pose", links.write("controlnet", dict(
                 mode=links.MODE_LABELS["pose"], controlnet="openpose", pose=pose, prompt=person, seed=7, steps=20,
                 cfg_scale=cfg, model=name))),),
             "the pose map is the output's first image and the figure follows it while the prompt sets the colours; "
             "guidance start and end choose the part of the run it steers.",
             "SD 1.5's ControlNets (canny, openpose) load from the Hub on first use; they read 512 px maps."),
        Part("7. The evolution: SD 1.5 → SD 2.x → SDXL → SD3",
             "SD 1.5 (2022): one CLIP, an 860M U-Net. SD 2.x: OpenCLIP and v-prediction at 768 px. SDXL (2023): two "
             "text encoders and a 2.6B U-Net at 1024 px. SD3 (2024): a transformer (MMDiT) in which text and image "
             "tokens attend to each other, 16-channel latents, rectified flow.",
             (("Open the U-Net and the MMDiT side by side", links.write("grid", dict(
                 prompt=one, seed=7, steps=20, schedulers=[ddim], axis="cfg", columns=f"{cfg:g}",
                 models=both))) if len(both) > 1 else
              ("Open a grid of this model", links.write("grid", dict(prompt=one, seed=7, models=both))),
              ("Open the model anatomy", links.write("anatomy", {}))),
             "in the grid, each model from the same noise with its own scheduler (the MMDiT takes a flow one); the "
             "MMDiT gets colours and places right and draws blobs where the shapes should be. The anatomy counts "
             "every part.",
             "a real SD 1.5 is one row of the anatomy; loaded with --model, it is the only model in these grids."),
    ]
    return parts


def part_markdown(part: Part) -> str:
    opens = " · ".join(f"[{words}]({query})" for words, query in part.experiments)
    return (f"### {part.title}\n{part.text}\n\n**Open this experiment:** {opens}\n\n**Look for:** {part.look_for}\n\n"
            f"**On SD 1.5:** {part.sd15}")


# -- the tab ----------------------------------------------------------------------------------
def build(models: Models, fields: Fields, settings: Settings) -> None:
    """Lay out the Lesson tab inside the current Tab and wire its exercises."""
    limits = {name: engine.limits for name, engine in models.engines.items()}
    first = next(iter(limits.values()))
    reference = settings.grid_reference_steps
    parts = lesson_parts(fields, first, reference)
    counts = tuple(n for n in exercises.STEP_COUNTS if n <= first.max_steps)
    gr.Markdown("The lesson, in order: each part says the idea in a few sentences, opens its experiment in the right "
                "tab with the settings filled in (press that tab's main button), and says what to look for. Three "
                "parts end with an exercise answered here on the loaded model. Every tab has a **Link to these "
                "settings** button at its top: a link carries the settings themselves, so it works after a restart "
                "and in a lesson plan.")

    # 1. The latent space, and its exercise: the compression
    gr.Markdown(part_markdown(parts[0]))
    with gr.Accordion("Exercise: the VAE's compression at 256, 512, 768 and 1024 px", open=False):
        with gr.Row():
            c_model = fields.model()
            c_run = gr.Button("Work it out", variant="primary")
        c_text = gr.Markdown()
        c_table = gr.Dataframe(headers=COMPRESSION_HEADERS, interactive=False, label="Pixels and latents")
    for part in parts[1:3]:
        gr.Markdown(part_markdown(part))

    # 4. Guidance, and its exercise: what CFG does to one step's prediction
    gr.Markdown(part_markdown(parts[3]))
    with gr.Accordion("Exercise: what CFG does to the prediction, measured at one step of a real run", open=False):
        gr.Markdown("Records one generation (as the inspector does), takes the chosen step's two predictions, and "
                    "works out uncond + s (cond − uncond) for s from 1 to 20.")
        with gr.Row():
            g_prompt = gr.Textbox(fields.models[0].attention_example or (fields.examples or [""])[0], lines=2,
                                  label="Prompt of the run")
            g_model = fields.model()
        with gr.Row():
            g_seed, g_steps = gr.Number(value=7, precision=0, label="Seed"), fields.steps(20)
            g_step = gr.Slider(1, first.max_steps, value=10, step=1, label="Step to measure")
            g_cfg = fields.cfg_scale(label="CFG scale of the run", info=None)
        g_run = gr.Button("Measure", variant="primary")
        g_status = status_line()
        g_text = gr.Markdown()
        with gr.Row():
            g_plot = gr.LinePlot(x="CFG scale", y="value", color="measure", label="Against the CFG scale", height=320)
            g_table = gr.Dataframe(headers=CFG_HEADERS, interactive=False, label="At each scale")

    # 5. Schedulers and steps, and its exercise: the knee
    gr.Markdown(part_markdown(parts[4]))
    with gr.Accordion("Exercise: how the error falls with the step count, and where doubling stops paying",
                      open=False):
        gr.Markdown(f"A Grid run with the steps as its columns ({', '.join(map(str, counts))}), each cell against a "
                    f"{reference}-step run of the same scheduler from the same noise; beside it, the lesson's 1-D toy.")
        with gr.Row():
            s_prompt = gr.Textbox((fields.examples or [""])[0], lines=2, label="Prompt of the runs")
            s_model = fields.model()
        with gr.Row():
            # the lesson's own DDIM where it fits the model
            s_scheduler = gr.Dropdown(fields.scheduler_names, label="Scheduler", min_width=220,
                                      value="DDIM" if "DDIM" in fields.scheduler_names else fields.default_scheduler)
            s_seed = gr.Number(value=7, precision=0, label="Seed")
            s_cfg = fields.cfg_scale(label="CFG scale of the runs", info=None)
        fields.follow(s_model, s_scheduler, cfg=s_cfg)
        s_run = gr.Button("Estimate", variant="primary")
        s_status = status_line()
        s_text = gr.Markdown()
        with gr.Row():
            s_plot = gr.LinePlot(x="steps", y="error / first error", color="series", height=320,
                                 label="Error against the step count (each as a share of its 5-step error)")
            s_table = gr.Dataframe(headers=STEPS_HEADERS, interactive=False, label="Each doubling")
    for part in parts[5:]:
        gr.Markdown(part_markdown(part))

    # -- handlers -----------------------------------------------------------------------------
    @shows_errors
    def on_compression(model=""):
        engine = models.pick(model)
        factor, channels = engine.limits.multiple, engine.limits.channels
        return compression_table(factor, channels), compression_text(engine.model.name, factor, channels)

    @shows_errors
    def on_cfg(prompt, seed, steps, step, cfg_scale, model="", progress=gr.Progress()):
        engine = models.pick(model)
        base = GenerateRequest(prompt=prompt, seed=seed, steps=steps, cfg_scale=cfg_scale, model=engine.model.name,
                               scheduler=fields.facts(engine.model.name).default_scheduler)
        if isinstance(step, (int, float)) and isinstance(steps, (int, float)) and not 1 <= step <= steps:
            raise InvalidRequest(f"step to measure must be from 1 to the run's {steps:g} steps, got {step!r}")
        if cfg_scale == 1:
            raise InvalidRequest("CFG scale 1 skips the unconditional prediction: measure a run with another scale")
        for item in stream(models.inspect, InspectRequest(base, "off")):
            if isinstance(item, Progress):
                progress((item.step, item.total), desc=item.label, unit="steps")
                yield gr.skip(), gr.skip(), running(item)
                continue
            k = int(step) - 1
            response = exercises.cfg_response(item.tensors["out_uncond"][k], item.tensors["out_cond"][k])
            yield cfg_table(response), cfg_frame(response), cfg_text(response, int(step), item.steps)

    @shows_errors
    def on_steps(prompt, seed, scheduler, cfg_scale, model="", progress=gr.Progress()):
        engine = models.pick(model)
        base = GenerateRequest(prompt=prompt, seed=seed, cfg_scale=cfg_scale, model=engine.model.name)
        req = GridRequest(base=base, schedulers=(scheduler,), columns=tuple(float(n) for n in counts), axis="steps")
        for item in stream(models.grid, req):
            if isinstance(item, Progress):
                progress((item.step, item.total), desc=item.label, unit="evaluations")
                yield gr.skip(), gr.skip(), running(item, unit="model evaluation")
                continue
            model_errors = [(int(c.value), float(c.latent_rms)) for c in item.cells[0]]
            toy = exercises.toy_step_errors(counts)
            yield (steps_table(model_errors, toy), steps_frame(model_errors, toy, engine.model.name),
                   steps_text(model_errors, toy, scheduler, int(item.reference)))

    # -- events -------------------------------------------------------------------------------
    c_run.click(on_compression, c_model, [c_table, c_text], api_name="lesson_compression")
    heavy(g_run.click, on_cfg, [g_prompt, g_seed, g_steps, g_step, g_cfg, g_model], [g_table, g_plot, g_text],
          settings, api_name="lesson_cfg", preprocess=False, show_progress_on=g_status)
    heavy(s_run.click, on_steps, [s_prompt, s_seed, s_scheduler, s_cfg, s_model], [s_table, s_plot, s_text],
          settings, evaluations=lambda *args, **kwargs: sum(counts) + reference, api_name="lesson_steps",
          preprocess=False, show_progress_on=s_status)


# -- links: a row at the top of every tab, and the page-load handler --------------------------
@dataclass
class LinkedTab:
    page: links.Page
    tab: gr.Tab
    inputs: dict[str, gr.components.Component]  # the endpoint's inputs by API name (those a link sets)
    note: gr.Markdown | None = None


def endpoint_inputs(demo: gr.Blocks, api_name: str) -> tuple[dict, gr.Block]:
    """The inputs of the event called `api_name`, by their handler's parameter names, and one block it touches."""
    fn = next(f for f in demo.fns.values() if f.api_name == api_name)
    names = [p for p in inspect.signature(fn.fn).parameters]
    return dict(zip(names, fn.inputs)), (fn.inputs or fn.outputs)[0]


def tab_of(block: gr.Block, tabs: gr.Tabs) -> gr.Tab:
    while block.parent is not tabs:
        block = block.parent
    return block


def link_tabs(demo: gr.Blocks, tabs: gr.Tabs, lesson_tab: gr.Tab) -> list[LinkedTab]:
    """Every tab a link can open, with the inputs of its main endpoint; each tab's id is its key in the address."""
    found = []
    for page in links.PAGES.values():
        if not page.endpoint:
            tab, inputs = lesson_tab, {}
        else:
            inputs, block = endpoint_inputs(demo, page.endpoint)
            missing = set(page.names) - set(inputs)
            if missing:
                raise ValueError(f"the {page.endpoint} endpoint has no input {sorted(missing)}")
            tab, inputs = tab_of(block, tabs), {n: inputs[n] for n in page.names}
        tab.id = page.key
        found.append(LinkedTab(page, tab, inputs))
    return found


def at_top(tab: gr.Tab, make: Callable[[], None]) -> None:
    """Make blocks with `make` inside `tab` (already built), placed first in it."""
    parent, before = tab.parent, len(tab.children)
    with tab:
        make()
    tab.parent = parent  # entering the tab again made the Blocks its parent
    tab.children[:] = tab.children[before:] + tab.children[:before]


def note_text(link: links.Link, applied: list[str]) -> str:
    said = f"Opened from a link: set {', '.join(applied)}." if applied else "Opened from a link."
    if link.notes:
        said += "  \n**Not applied:**\n" + "\n".join(f"- {n}" for n in link.notes)
    return said


def wire_links(demo: gr.Blocks, tabs: gr.Tabs, lesson_tab: gr.Tab, limits: dict[str, Limits]) -> list[LinkedTab]:
    """A "Link to these settings" row at the top of every tab, and the page load that applies a link: first the tab,
    the notes and the model, then the settings the others follow (the grid's axis, the control mode), then the
    rest."""
    linked = link_tabs(demo, tabs, lesson_tab)
    for t in linked:
        def row(t=t):
            with gr.Row(equal_height=True):
                button = gr.Button("Link to these settings", size="sm", scale=0, min_width=190)
                box = gr.Textbox(show_label=False, container=False, scale=4, buttons=["copy"],
                                 placeholder="the address of this tab with its settings: click the button",
                                 elem_classes=["settings-link"])
            t.note = gr.Markdown("", elem_classes=["link-note"])
            key, names = t.page.key, list(t.inputs)
            button.click(lambda *values: links.write(key, dict(zip(names, values))), list(t.inputs.values()), box,
                         api_visibility="private", queue=False, preprocess=False).then(None, box, box, js=COPY_JS,
                                                                       api_visibility="private", queue=False)
        at_top(t.tab, row)

    # stages, each applied after the form's own follow-ups of the one before: the model (its schedulers, sizes,
    # axes), then what the others follow (the grid's axis resets its columns; the control mode its ControlNet)
    stages = [[(t, n) for t in linked for n in t.inputs if n in MODEL_SETTINGS],
              [(t, n) for t in linked for n in t.inputs if n in t.page.first and n not in MODEL_SETTINGS],
              [(t, n) for t in linked for n in t.inputs if n not in t.page.first]]

    def read(request: gr.Request | None) -> links.Link:
        query = dict(request.query_params) if request is not None else {}
        return links.parse(query, limits) if query else links.Link()

    def value_of(name: str, link: links.Link):
        """A link's value for its input; the grid's axis with the choices of the models it names (a flow model's
        axis is not among the first model's choices)."""
        value = link.values[name]
        if name != "axis":
            return value
        rows = link.values.get("models") or list(limits)[:1]
        shift = any(limits[m].shift for m in rows if m in limits)
        return gr.Radio(choices=[(a.label, k) for k, a in AXES.items() if shift or not a.needs_shift], value=value)

    def stage(k: int, request: gr.Request | None) -> list:
        link = read(request)
        if k and any(t.page.key == link.tab and n in link.values for t, n in stages[k - 1]):
            time.sleep(SETTLE_SECONDS)  # the form's follow-ups of the stage before first: they reset what is set here
        return [value_of(n, link) if t.page.key == link.tab and n in link.values else gr.skip() for t, n in stages[k]]

    def opened(link: links.Link) -> str | None:
        return link.tab or ("lesson" if link.notes else None)

    def on_load_first(request: gr.Request):
        tab = opened(read(request))
        return gr.Tabs(selected=tab) if tab else gr.skip(), *stage(0, request)

    def on_load_follow(request: gr.Request):
        return stage(1, request)

    def on_load_rest(request: gr.Request):
        """The last settings, and the note that says what the link set (once it is all set) and what it left out."""
        link, tab = read(request), opened(read(request))
        notes = [note_text(link, list(link.values)) if t.page.key == tab else gr.skip() for t in linked]
        return *stage(2, request), *notes

    outputs = [[t.inputs[n] for t, n in one] for one in stages]
    demo.load(on_load_first, None, [tabs, *outputs[0]], api_visibility="private", queue=False).then(
        on_load_follow, None, outputs[1], api_visibility="private", queue=False).then(
        on_load_rest, None, [*outputs[2], *(t.note for t in linked)], api_visibility="private", queue=False)
    return linked
