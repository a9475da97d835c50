"""The generation form every tab shares: its inputs (defaults read from `requests`, ranges from the
settings) and the request built from a handler's values.

Each tab lays the inputs out its own way (the Prompt tab puts the token counters under the boxes,
the Grid has checkboxes for schedulers), but the labels, ranges and defaults are made here once, and
`generate_request` is the one place a `GenerateRequest` is built from what the browser or the API sent: each
field passed by its name, so a handler parameter renamed is an error where it is used, never a field silently
left at its default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from playground.schema import GenerateRequest
from playground.settings import Settings

DEFAULTS = GenerateRequest()


def generate_request(*, prompt: str, negative_prompt: str, seed: int, steps: int, cfg_scale: float, width: int,
                     height: int, model: str, scheduler: str = DEFAULTS.scheduler, num_images: int = DEFAULTS.num_images,
                     shift: float = DEFAULTS.shift, refiner_start: float = DEFAULTS.refiner_start,
                     skip_layer_guidance: float = DEFAULTS.skip_layer_guidance,
                     cfg_stop: float = DEFAULTS.cfg_stop) -> GenerateRequest:
    """The form's values, by name and as they come (the Engine checks them), in a request. Every tab's form has the
    required ones (one left out is a TypeError, not a default); the others only where the tab shows them (the Grid's
    rows replace the scheduler)."""
    return GenerateRequest(prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps, cfg_scale=cfg_scale,
                           scheduler=scheduler, width=width, height=height, num_images=num_images, shift=shift,
                           refiner_start=refiner_start, skip_layer_guidance=skip_layer_guidance, model=model,
                           cfg_stop=cfg_stop)


def size_note(width: int, height: int, native: int) -> str:
    """A warning when the size is not the one the model was trained at."""
    if (width, height) == (native, native):
        return ""
    return (f"⚠️ {width}x{height} is not the {native}x{native} the model was trained at: shapes may repeat, "
            "stretch or break up.")


@dataclass(frozen=True)
class ModelFacts:
    """What the form needs to know of one loaded model (read from its Engine once, at start)."""

    name: str  # the request's `model`, and the Model menu's value
    native_size: int
    schedulers: tuple[str, ...]
    takes_shift: bool = False  # its schedulers take a timestep shift (SD3's rectified flow)
    skips_layers: bool = False  # skip-layer guidance can skip some of its blocks (an MMDiT's)
    joint_attention: bool = False  # its attention is an MMDiT's joint attention, not a U-Net's cross-attention
    refiner: bool = False  # an SDXL refiner is loaded beside it
    channels: int = 4  # its latent channels
    examples: tuple[str, ...] = ()
    attention_example: str = ""  # the prompt the inspector starts with, where the model names one
    vocabulary: frozenset[str] = frozenset()  # the words it knows, when it lists them (the offline models do)
    controlnets: bool = True  # it has (or may load) ControlNets: an offline model only those in its folder
    label: str = ""  # the Model menu's words for it
    cfg_scale: float = DEFAULTS.cfg_scale  # the CFG the form starts at: the model's own where its marker names one

    @property
    def default_scheduler(self) -> str:
        """The request's default when it fits the model, else the model's first scheduler (SD3: Flow Euler)."""
        return DEFAULTS.scheduler if DEFAULTS.scheduler in self.schedulers else self.schedulers[0]


@dataclass
class Form:
    """The shared inputs of one tab laid out by `Fields.form`."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    seed: gr.Number
    steps: gr.Slider
    cfg_scale: gr.Slider
    width: gr.Slider
    height: gr.Slider
    scheduler: gr.Dropdown
    model: gr.Dropdown  # the Model menu (hidden with one model loaded)
    action: Any = None  # what the tab's `action` laid out under the prompt (its buttons, its status line)


class Fields:
    """Makes the form's inputs inside the current layout, each with its label, range and default. Where several
    models are loaded (`models`), the form starts with the first one's facts and a Model menu picks another."""

    def __init__(self, settings: Settings, native_size: int, scheduler_names: list[str], examples: list[str] = (),
                 vocabulary: frozenset[str] = frozenset(), refiner: bool = False, channels: int = 4,
                 models: list[ModelFacts] = ()):
        self.models = list(models) or [ModelFacts("", native_size, tuple(scheduler_names), refiner=refiner,
                                                  channels=channels, examples=tuple(examples), vocabulary=vocabulary)]
        first = self.models[0]
        self.settings, self.native_size = settings, first.native_size
        self.scheduler_names, self.examples = list(first.schedulers), list(first.examples)
        self.attention_example = first.attention_example
        self.vocabulary = first.vocabulary  # the words the model knows, when it lists them (the offline model does)
        self.takes_shift, self.skips_layers = first.takes_shift, first.skips_layers  # its sliders shown or not
        self.joint_attention = first.joint_attention
        self.refiner = first.refiner  # an SDXL refiner is loaded: the last steps can be handed to it
        self.channels = first.channels  # the latent channels the inspector shows (4; SD3's 16)
        self.default_scheduler = first.default_scheduler
        self.default_cfg = first.cfg_scale  # the model's recommended guidance (the offline U-Net's is lower than SD's)

    def facts(self, name: str) -> ModelFacts:
        """The facts of the model called `name` (the first model's for "" or a name not loaded)."""
        return next((m for m in self.models if m.name == name), self.models[0])

    def with_controlnets(self) -> "Fields":
        """The same form over the models that have ControlNets (all of them where none has: a run then names the
        ControlNet it could not load)."""
        return Fields(self.settings, 0, [], models=[m for m in self.models if m.controlnets] or self.models)

    def model(self) -> gr.Dropdown:
        """The Model menu: the loaded models, shown when there is a choice; its value is the request's `model`."""
        return gr.Dropdown([(m.label or m.name, m.name) for m in self.models], value=self.models[0].name,
                           label="Model", visible=len(self.models) > 1, min_width=220,
                           info="each loaded model; the settings below follow the one chosen")

    def follow(self, model: gr.Dropdown, scheduler: gr.Dropdown | None = None, size: tuple = (),
               shift: gr.Slider | None = None, skip_layer_guidance: gr.Slider | None = None,
               refiner_start: gr.Slider | None = None, cfg: gr.Slider | None = None) -> None:
        """When the Model menu changes, the form follows the model: its schedulers (the chosen one kept where it
        fits), its native size and recommended CFG, and the flow and refiner settings shown only where they
        apply."""
        if len(self.models) < 2:
            return
        outputs = [b for b in (scheduler, *size, cfg, shift, skip_layer_guidance, refiner_start) if b is not None]

        def on_model(name, current, *values):
            f = self.facts(name)
            sizes, guidance = values[:len(size)], values[len(size):]
            out = [gr.Dropdown(choices=list(f.schedulers),
                               value=current if current in f.schedulers else f.default_scheduler)] if scheduler else []
            # a size (a CFG) that is another model's native (recommended) one becomes this one's; the user's own stays
            natives, recommended = {m.native_size for m in self.models}, {m.cfg_scale for m in self.models}
            out += [gr.Slider(value=f.native_size) if s in natives else gr.skip() for s in sizes]
            out += [gr.Slider(value=f.cfg_scale) if g in recommended else gr.skip() for g in guidance]
            out += [gr.Slider(visible=f.takes_shift)] if shift is not None else []
            out += [gr.Slider(visible=f.skips_layers)] if skip_layer_guidance is not None else []
            out += [gr.Slider(visible=f.refiner, value=0.0)] if refiner_start is not None else []
            return out[0] if len(out) == 1 else out  # gradio reads a list returned to one output as its value

        # the user's choice only: a restored PNG sets the model and the whole form at once (prompt.py)
        inputs = [model, scheduler or model, *size, *([cfg] if cfg is not None else [])]
        model.input(on_model, inputs, outputs, api_visibility="private", queue=False)

    def prompt(self, lines: int = 2, examples: bool = True, first: str = "") -> gr.Textbox:
        """The prompt box, starting with `first` or the model's first example: an empty prompt draws the
        unconditional picture (what CFG pushes away from), which is no way to start."""
        box = gr.Textbox(label="Prompt", lines=lines, value=first or (self.examples[0] if self.examples else ""),
                         placeholder="describe the picture (empty: the model's unconditional picture)")
        if examples and self.examples:
            gr.Examples([[e] for e in self.examples], inputs=[box], label="Prompts this model knows")
        return box

    def negative_prompt(self, lines: int = 1) -> gr.Textbox:
        return gr.Textbox(label="Negative prompt", lines=lines, placeholder="what you don't want (optional)")

    def scheduler(self, label: str = "Scheduler (sampler)") -> gr.Dropdown:
        # min_width: the longest name ("DPM++ 2M SDE Karras") is read whole, never cut off
        return gr.Dropdown(self.scheduler_names, value=self.default_scheduler, label=label, min_width=220)

    def shift(self) -> gr.Slider:
        """A flow model's shift (shown for SD3 only; 0 = the model's own): how much of the run is spent at high
        noise, sigma' = shift sigma / (1 + (shift - 1) sigma)."""
        return gr.Slider(0, 20, value=DEFAULTS.shift, step=0.5, label="Flow shift (0 = the model's own)",
                         info="higher spends more steps at high noise (composition), lower more on detail",
                         visible=self.takes_shift)

    def skip_layer_guidance(self) -> gr.Slider:
        """SD3.5's skip-layer guidance scale (shown for SD3; 0 = off)."""
        return gr.Slider(0, 10, value=DEFAULTS.skip_layer_guidance, step=0.1, visible=self.skips_layers,
                         label="Skip-layer guidance (SD3.5; 0 = off, 2.8 is usual)",
                         info="early on, also pushes away from the model with some middle blocks skipped: "
                              "sharper structure")

    def refiner_start(self) -> gr.Slider:
        """Where SDXL's refiner takes over (shown with a refiner loaded; 0 = the base alone)."""
        return gr.Slider(0, 0.95, value=DEFAULTS.refiner_start, step=0.05, visible=self.refiner,
                         label="Refiner takes over at (0 = the base alone)",
                         info="the base denoises this fraction of the way, the refiner adds the fine detail after")

    def steps(self, value: int = DEFAULTS.steps, label: str = "Steps") -> gr.Slider:
        return gr.Slider(1, self.settings.max_steps, value=value, step=1, label=label)

    def cfg_scale(self, label: str = "CFG scale",
                  info: str = "1 = no guidance; higher follows the prompt harder") -> gr.Slider:
        return gr.Slider(0, self.settings.max_cfg, value=self.default_cfg, step=0.5, label=label, info=info)

    def cfg_stop(self) -> gr.Slider:
        """Where classifier-free guidance stops, as a fraction of the steps (1 = guided to the end)."""
        return gr.Slider(0, 1, value=DEFAULTS.cfg_stop, step=0.05, label="CFG stops at",
                         info="how much of the run is guided (1 = all of it); after that, the prompt alone: faster")

    def seed(self, label: str = "Seed (-1 = random)", **kwargs) -> gr.Number:
        return gr.Number(value=DEFAULTS.seed, precision=0, label=label, **kwargs)

    def size(self) -> tuple[gr.Slider, gr.Slider]:
        """Width and height in a row, starting at the model's native size."""
        with gr.Row():
            return tuple(gr.Slider(64, self.settings.max_size, value=self.native_size, step=8, label=label)
                         for label in ("Width", "Height"))

    def num_images(self) -> gr.Slider:
        return gr.Slider(1, self.settings.max_images, value=DEFAULTS.num_images, step=1, label="Images")

    def form(self, lines: int = 2, first: str = "", action: Callable[[], Any] | None = None) -> Form:
        """The whole form in the usual order: the model (when there is a choice), prompt (starting with `first`
        where given), negative prompt, scheduler and steps, CFG and seed, width and height. `action` lays out the
        tab's action (its buttons and status line) right under the prompt, the examples going after the settings:
        on a projector's first screen (1280x720) with the prompt."""
        model = self.model()
        prompt = self.prompt(lines, first=first, examples=action is None)
        laid_out = action() if action is not None else None
        negative = self.negative_prompt()
        with gr.Row():
            scheduler, steps = self.scheduler("Scheduler"), self.steps()
        with gr.Row():
            cfg, seed = self.cfg_scale(info=None), self.seed()
        width, height = self.size()
        if action is not None and self.examples:
            gr.Examples([[e] for e in self.examples], inputs=[prompt], label="Prompts this model knows")
        self.follow(model, scheduler, (width, height), cfg=cfg)
        return Form(prompt, negative, seed, steps, cfg, width, height, scheduler, model, laid_out)
