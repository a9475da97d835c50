"""Grid tab: schedulers x CFG scales, step counts or CFG stops, from one seed, labelled, with what each cell cost."""

from __future__ import annotations

import math
from typing import Callable

import gradio as gr
import pandas as pd

from playground.axes import AXES
from playground.latents import snr_db
from playground.outputs import Folder, save_grid
from playground import schedulers
from playground.errors import InvalidRequest
from playground.schema import GridRequest, GridResult, Progress
from playground.settings import Settings
from playground.ui.common import heavy, running, shows_errors, status_line, stop_button, stream
from playground.ui.fields import Fields, generate_request

DEFAULTS = GridRequest()

TABLE_HEADERS = ["scheduler", "CFG scale", "steps", "seed", "model evaluations", "seconds", "size",
                 "PSNR vs reference (dB)", "latent RMS vs reference"]


# -- helpers ----------------------------------------------------------------------------------
def noise_table(result: GridResult) -> pd.DataFrame:
    """One row per model evaluation and scheduler: sigma and SNR in dB (1 / sigma^2; a flow's ((1 - sigma) / sigma)^2)."""
    rows = []
    for name, sigmas in result.sigmas.items():
        for k, sigma in enumerate(sigmas):
            rows.append({"model evaluation": k + 1, "scheduler": name, "sigma": round(sigma, 4),
                         "SNR (dB)": round(snr_db(sigma, result.flow_sigmas or name in result.flow_rows), 2)})
    return pd.DataFrame(rows, columns=["model evaluation", "scheduler", "sigma", "SNR (dB)"])


def convergence_table(result: GridResult) -> pd.DataFrame:
    """Steps axis: each cell's PSNR to its scheduler's reference run, against its step count."""
    rows = [{"steps": c.value, "scheduler": c.row, "PSNR vs reference (dB)": round(c.psnr, 2),
             "latent RMS": round(c.latent_rms, 4)}
            for row in result.cells for c in row if c.psnr is not None and math.isfinite(c.psnr)
            and AXES[result.request.axis].steps]
    frame = pd.DataFrame(rows, columns=["steps", "scheduler", "PSNR vs reference (dB)", "latent RMS"])
    # numbers even when empty (a CFG grid): an empty table of objects would leave the plot's axes as categories
    return frame.astype({"steps": float, "scheduler": str, "PSNR vs reference (dB)": float, "latent RMS": float})


def cell_table(result: GridResult) -> pd.DataFrame:
    """One row per cell, with the settings its PNG carries (the column's value among them); the distance to the
    reference run only for an axis that has one."""
    headers, axis = table_headers(result.request.axis, result.flow_sigmas), AXES[result.request.axis]
    rows = []
    for row in result.cells:
        for c in row:
            p = c.generated.params
            distance = [f"{c.psnr:.2f}", f"{c.latent_rms:.4f}"] if c.psnr is not None else []
            shift = [p.shift or "model's own"] if result.flow_sigmas else []
            value = [getattr(p, axis.field)] if axis.column else []
            rows.append([c.row, p.cfg_scale, *value, p.steps, *shift, p.seed, c.unet_calls, round(c.seconds, 3),
                         f"{p.width}x{p.height}", *distance])
    return pd.DataFrame(rows, columns=headers)


def table_headers(axis: str, flow: bool = False) -> list[str]:
    """The cell table's columns: the axis's own where the others do not show its value (CFG stop), a flow model's
    shift after the steps, the distance to the reference run only for an axis that has one (steps, CFG stop)."""
    a = AXES[axis]
    head = TABLE_HEADERS[:2] + ([a.column] if a.column else []) + TABLE_HEADERS[2:3] + (["shift"] if flow else []) \
        + TABLE_HEADERS[3:]
    return head if a.reference else head[:-2]


def cost_text(calls: dict[str, int], axis: str, reference: int) -> str:
    """What a grid will cost, said before it runs."""
    text = f"This grid takes **{sum(calls.values())} model evaluations**"
    if AXES[axis].batched:
        return text + ", each on a batch of its row's cells (every CFG scale of a scheduler at once)."
    a = AXES[axis]
    if not a.reference:
        return text + ", one cell at a time (each value changes the whole run)."
    if a.steps:
        return text + (f", one cell at a time, including a {reference}-step reference run of each row (its model's "
                       "own): the slow kind of grid.")
    return text + f", one cell at a time, including {a.reference_text.format(value=a.reference(reference))} of each " \
        "row as its reference."


def on_cost_text(grid_evaluations: Callable, reference: int, schedulers, columns, steps, axis, models=()) -> str:
    """The cost line for the form's values; a bad value is named there, before anything runs."""
    try:
        calls = grid_evaluations(grid_request(steps=steps, schedulers=schedulers, columns=columns, axis=axis,
                                              models=models))
    except InvalidRequest as exc:
        return f"⚠ {exc}"
    return cost_text(calls, axis, reference)


def stochastic_note(names) -> str:
    """Why an ancestral / SDE scheduler's cells never come close to its reference run."""
    noisy = [n for n in names if schedulers.REGISTRY[n].stochastic]
    if not noisy:
        return ""
    return (f"{' and '.join(noisy)} add{'s' * (len(noisy) == 1)} fresh noise at every step, so a run of any other "
            "length never meets the reference: the distance stays large at every step count and measures that "
            "noise, not the sampler's error.")


def summary(result: GridResult) -> str:
    req, r = result.request, result.request.base
    rows, cols = len(result.cells), len(result.cells[0])
    evals, axis = sum(c.unet_calls for row in result.cells for c in row), AXES[req.axis]
    if axis.batched:
        how = f"{axis.fixed(r)}; each scheduler's {axis.plural} ran as one batch"
    elif not axis.reference:
        how = f"{axis.fixed(r)}; one run a cell"
    else:
        how = (f"{axis.fixed(r)}; each cell compared with {axis.reference_text.format(value=result.reference)} of its "
               f"{'model and ' if req.models else ''}scheduler from the same noise (PSNR of the images, RMS of the "
               "final latents)")
    return "  \n".join(line for line in [
        f"**Seed {r.seed}**, the same starting noise in every cell",
        f"{rows} {'row' if req.models else 'scheduler'}{'s' * (rows > 1)} x {cols} {AXES[req.axis].plural} = "
        f"{rows * cols} cells" + (f" (rows: {', '.join(req.models)}, each with its own schedulers)" if req.models else "")
        + f"; {r.width}x{r.height}; {how}",
        (f"{sum(row[0].unet_calls for row in result.cells)} model evaluations, each on a batch of its row's {cols} "
         f"cells; {result.seconds:.2f} s in all" if axis.batched else
         f"{evals} model evaluations in the cells" + (", plus the reference runs" if axis.reference else "")
         + f"; {result.seconds:.2f} s in all"),
        stochastic_note(req.schedulers) if axis.steps else "",  # a CFG stop's reference draws the same noise
    ] if line)


def scheduler_choices(models: list) -> list[str]:
    """The schedulers of the chosen models (ModelFacts), each once, in their order."""
    return list(dict.fromkeys(name for m in models for name in m.schedulers))


def default_rows(names: list[str]) -> list[str]:
    """The grid's first rows: the request's default schedulers where they fit the model, else its first two."""
    fit = [n for n in DEFAULTS.schedulers if n in names]
    return fit or list(names[:2])


def grid_request(prompt="", negative_prompt="", seed=-1, steps=DEFAULTS.base.steps, schedulers=DEFAULTS.schedulers,
                 columns=DEFAULTS.columns, width=0, height=0, axis=DEFAULTS.axis,
                 cfg_scale=DEFAULTS.base.cfg_scale, models=()) -> GridRequest:
    """The `grid` API's values, as they come, in a request (the Engine checks them). `models`: the rows' models
    (one: that model's grid; several: each model's rows, one after the other)."""
    one = models[0] if isinstance(models, (list, tuple)) and len(models) == 1 else ""
    base = generate_request(prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
                            cfg_scale=cfg_scale, width=width, height=height, model=one)
    return GridRequest(base=base, schedulers=schedulers, columns=columns, axis=axis,
                       models=() if one or models is None else models)


def build(grid: Callable[..., GridResult], grid_evaluations: Callable[[GridRequest], dict[str, int]], fields: Fields,
          settings: Settings) -> None:
    """Lay out the tab inside the current Blocks and wire its events."""
    # -- layout -------------------------------------------------------------------------------
    # one line in view; the rest on demand, so that the action and the grid are on a projector's first screen
    gr.Markdown("Rows are schedulers, columns are CFG scales, step counts or where CFG stops, and every cell starts "
                "from the **same noise**: only the setting you compare changes.")
    with gr.Accordion("How the grid runs, and what to look for", open=False):
        gr.Markdown("Rows are schedulers (and models, where more than one is loaded). All scales of a scheduler run "
                    "as one batch. With step counts, each cell is compared with a "
                    f"{settings.grid_reference_steps}-step run of its scheduler: which schedulers are done in 20 "
                    "steps, and which need 50? With CFG stops, with the run guided to the end: how much of the picture "
                    f"do the last, cheaper unguided steps change? At most {settings.max_grid_cells} cells. The "
                    "downloaded grid and every cell are PNGs with their settings inside: drop a cell on the Prompt "
                    "tab's restore box to make it again.")
    with gr.Row():
        with gr.Column(scale=5):
            prompt_box = fields.prompt(examples=False)
            # the action right under the prompt, with its cost: on a projector's first screen (1280x720)
            with gr.Row():
                run = gr.Button("Run grid", variant="primary", scale=3)
                stop = gr.Button("Stop", variant="stop", scale=1)
            status = status_line()
            cost = gr.Markdown(on_cost_text(grid_evaluations, settings.grid_reference_steps,
                                            default_rows(fields.scheduler_names), DEFAULTS.columns, DEFAULTS.base.steps,
                                            DEFAULTS.axis))
            info = gr.Markdown()
            first = [m.name for m in fields.models[:1]]
            models_box = gr.CheckboxGroup([(m.label or m.name, m.name) for m in fields.models], value=first,
                                          label="Models (rows): tick both to compare them from the same noise",
                                          visible=len(fields.models) > 1)
            schedulers_box = gr.CheckboxGroup(fields.scheduler_names, value=default_rows(fields.scheduler_names),
                                              label="Schedulers (rows; each model runs those that fit it, else its "
                                                    "default)" if len(fields.models) > 1 else "Schedulers (rows)")
            axis_box = gr.Radio([(a.label, key) for key, a in AXES.items() if fields.takes_shift or not a.needs_shift],
                                value=DEFAULTS.axis, label="Columns vary")
            columns_box = gr.Textbox(value=DEFAULTS.columns, label="Column values",
                                     info="a list such as 1, 3, 7.5, 12 or a range such as 2-12 (+2) or 1-15 [5]")
            with gr.Row():
                steps_box = fields.steps(DEFAULTS.base.steps, label="Steps (unless the columns are step counts)")
                cfg_box = fields.cfg_scale(label="CFG scale (unless the columns are CFG scales)", info=None)
            seed_box = fields.seed(label="Seed (-1 = random, one for all cells)")
            width_box, height_box = fields.size()
            negative_box = fields.negative_prompt()
            if fields.examples:
                gr.Examples([[e] for e in fields.examples], inputs=[prompt_box], label="Prompts this model knows")
        with gr.Column(scale=7):
            sheet = gr.Image(label="Grid", show_label=False, format="png", interactive=False, type="filepath",
                             height=560, elem_classes=["pixels"], elem_id="grid-sheet")
    with gr.Row():
        plot = gr.LinePlot(x="model evaluation", y="SNR (dB)", color="scheduler", tooltip=["scheduler", "sigma"],
                           label="Noise level at each model evaluation (SNR in dB: 1/σ², for SD3's flow ((1 − σ)/σ)²; "
                                 "higher is cleaner)")
        convergence = gr.LinePlot(x="steps", y="PSNR vs reference (dB)", color="scheduler",
                                  tooltip=["scheduler", "steps", "latent RMS"], visible=AXES[DEFAULTS.axis].steps,
                                  label="Step columns: how close each cell is to its scheduler's long run "
                                        "(PSNR in dB: higher is closer)")
    # every row of cells in view (height "auto"), four a row so that "DPM++ 2M SDE Karras · CFG 12" fits
    cells = gr.Gallery(label="Cells", format="png", columns=4, object_fit="contain", height="auto", fit_columns=False,
                       elem_classes=["pixels"])
    table = gr.Dataframe(headers=table_headers(DEFAULTS.axis, fields.takes_shift),
                         label="What each cell cost", interactive=False)

    # -- handlers -----------------------------------------------------------------------------
    @shows_errors
    def on_grid(prompt, negative_prompt, seed, steps, schedulers, columns, width, height, axis=DEFAULTS.axis,
                cfg_scale=DEFAULTS.base.cfg_scale, models=(), progress=gr.Progress()):
        req = grid_request(prompt, negative_prompt, seed, steps, schedulers, columns, width, height, axis, cfg_scale,
                           models)
        for item in stream(grid, req):
            if isinstance(item, Progress):
                progress((item.step, item.total), desc=item.label, unit="evaluations")
                yield *[gr.skip()] * 5, running(item, unit="model evaluation")
            else:
                path, items = save_grid(item, Folder.of(settings))
                yield path, items, cell_table(item), noise_table(item), convergence_table(item), summary(item)

    def on_cost(schedulers, columns, steps, axis, models):
        return on_cost_text(grid_evaluations, settings.grid_reference_steps, schedulers, columns, steps, axis, models)

    def on_models(names, chosen, axis):
        """The rows' schedulers and the axes follow the ticked models (none ticked: the first model, as the grid)."""
        picked = [m for m in fields.models if m.name in (names or [])] or fields.models[:1]
        choices, shift = scheduler_choices(picked), any(m.takes_shift for m in picked)
        kept = [n for n in chosen or [] if n in choices]
        for m in picked:  # every model keeps at least one row it can run
            if not any(n in m.schedulers for n in kept):
                kept += default_rows(list(m.schedulers))[:1]
        axes = [(a.label, key) for key, a in AXES.items() if shift or not a.needs_shift]
        return (gr.CheckboxGroup(choices=choices, value=kept),
                gr.Radio(choices=axes, value=axis if axis in [key for _, key in axes] else DEFAULTS.axis))

    def on_axis(axis):
        """A fresh list that suits the new axis; the distance plot only for step counts (the distance by steps)."""
        if axis not in AXES:
            return gr.skip(), gr.skip()
        # the distance plot starts afresh: after a CFG grid's empty table it would keep no series to draw
        return AXES[axis].default, gr.LinePlot(value=None, visible=AXES[axis].steps)

    # -- events -------------------------------------------------------------------------------
    inputs = [prompt_box, negative_box, seed_box, steps_box, schedulers_box, columns_box, width_box, height_box,
              axis_box, cfg_box, models_box]
    # preprocess=False: plain values; the Engine's checks name the bad value before any work starts
    axis_box.change(on_axis, axis_box, [columns_box, convergence], api_visibility="private", queue=False)
    models_box.change(on_models, [models_box, schedulers_box, axis_box], [schedulers_box, axis_box],
                      api_visibility="private", queue=False)
    for box in (schedulers_box, columns_box, steps_box, axis_box, models_box):
        box.change(on_cost, [schedulers_box, columns_box, steps_box, axis_box, models_box], cost,
                   api_visibility="private", show_progress="hidden", trigger_mode="always_last")
    # progress and errors on the status line: the last grid stays in view until the new one is done
    def evaluations(values: dict) -> int:
        """What a grid costs (its ZeroGPU lease follows it): every cell's and reference run's model evaluations."""
        try:
            return sum(grid_evaluations(grid_request(
                steps=values["steps"], schedulers=values["schedulers"], columns=values["columns"],
                axis=values.get("axis", DEFAULTS.axis), models=values.get("models", ()))).values())
        except (InvalidRequest, KeyError):  # a bad value: the Engine names it before any work
            return 0

    event = heavy(run.click, on_grid, inputs, [sheet, cells, table, plot, convergence, info], settings,
                  evaluations=evaluations, api_name="grid", preprocess=False, show_progress_on=status)
    stop_button(stop, event, info)
