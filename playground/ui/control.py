"""ControlNet tab: a photo (or a ready map, or a pose) -> a control map -> images that follow its structure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr

from playground import poses
from playground.preprocessors import PREPROCESSORS, RESIZE_MODES, CannyOptions, PoseOptions
from playground.loading import shown_source
from playground.outputs import Folder, save_control, save_pose
from playground.schema import ControlRequest, ControlResult, PoseRequest, Progress
from playground.settings import ASSETS, CONTROLNETS, Settings
from playground.ui.common import error, heavy, running, shows_errors, status_line, stop_button, stream, wired
from playground.ui.fields import Fields, generate_request, size_note

MODES = {p.label: key for key, p in PREPROCESSORS.items()}  # the radio's labels (the API takes these) -> keys
CANNY = {p.name: p for p in PREPROCESSORS["canny"].params}  # the threshold sliders' ranges and defaults
POSE = {p.name: p for p in PREPROCESSORS["openpose"].params}  # the detector radio, the hands and face boxes
DEFAULTS = ControlRequest()
# the drawn pose brought into view when less than its whole height shows (as on a phone, where it comes under the JSON)
INTO_VIEW_JS = """() => {
  const view = document.getElementById("pose-drawn");
  if (!view) return;
  const r = view.getBoundingClientRect();
  if (r.top < 0 || r.bottom > window.innerHeight) view.scrollIntoView({block: "nearest", behavior: "smooth"});
}"""


# -- helpers ----------------------------------------------------------------------------------
def control_examples(offline: bool) -> list[list]:
    """[image, mode, ControlNet, prompt] rows: the shapes and landscape scenes, then every pose preset,
    with prompts in the offline model's words when it is the one loaded."""
    folder = ASSETS / "examples"
    canny_mode, ready = PREPROCESSORS["canny"].label, PREPROCESSORS["image"].label
    rows = [[str(folder / "shapes.png"), canny_mode, "canny",
             "a yellow star on the left and a purple ring on the right on a black background" if offline
             else "two glowing paper lanterns at night"],
            [str(folder / "scene.png"), canny_mode, "canny",
             "a red square on a white background" if offline else "a cosy cottage on a hill, sunny day"]]
    colours = ["red", "blue", "green", "orange", "purple", "cyan"]
    for colour, pose in zip(colours, sorted(folder.glob("pose-*.png"))):
        prompt = f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} person on a white background" if offline else f"an astronaut in a {colour} suit, full body"
        rows.append([str(pose), ready, "openpose", prompt])
    return rows


def upload_path(upload) -> str | None:
    """A raw upload (preprocess=False) as a path: a corrupt file then reaches the Engine, which names it."""
    return upload.get("path") if isinstance(upload, dict) else upload


def control_request(image, mode, controlnet, low=CannyOptions.low, high=CannyOptions.high, resize=DEFAULTS.resize,
                    conditioning_scale=DEFAULTS.conditioning_scale, guidance_start=DEFAULTS.guidance_start,
                    guidance_end=DEFAULTS.guidance_end, prompt="", negative_prompt="", seed=-1,
                    steps=DEFAULTS.base.steps, cfg_scale=DEFAULTS.base.cfg_scale, scheduler=DEFAULTS.base.scheduler,
                    width=0, height=0, num_images=1, detector=PoseOptions.detector, hands=PoseOptions.hands,
                    face=PoseOptions.face, pose="", model="") -> ControlRequest:
    """The `preprocess` / `pose` / `control` API's values, as they come, in a request (the Engine checks them)."""
    return ControlRequest(image=upload_path(image), mode=mode, controlnet=controlnet, canny=CannyOptions(low, high),
                          openpose=PoseOptions(detector, hands, face), resize=resize,
                          conditioning_scale=conditioning_scale, guidance_start=guidance_start,
                          guidance_end=guidance_end, pose=pose,
                          base=generate_request(prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
                                                cfg_scale=cfg_scale, scheduler=scheduler, width=width, height=height,
                                                num_images=num_images, model=model))


def control_text(result: ControlResult) -> str:
    c, r = result.request, result.request.base
    return (f"**Seed {r.seed}**: {r.scheduler}, {r.steps} steps, CFG {r.cfg_scale:g}, {r.width}x{r.height}; "
            f"ControlNet `{shown_source(result.controlnet)}` at scale {c.conditioning_scale:g} from "
            f"{c.guidance_start:g} to {c.guidance_end:g} of the steps; {result.seconds:.2f} s")


def detection_text(d: poses.Detection) -> str:
    people = len(d.pose.people)
    found = ", ".join(f"{p.found} of 18 body points" + (", hands" if p.left_hand or p.right_hand else "")
                      + (", face" if p.face else "") for p in d.pose.people)
    return (f"**{people} {'person' if people == 1 else 'people'} found** by **{d.detector}** ({d.why}) in "
            f"{d.seconds:.2f} s: {found}. The map now comes from the pose below: edit it, mirror it, or generate.")


@dataclass
class PoseSection:
    """The OpenPose section's inputs the tab's events read."""

    detector: gr.Radio
    hands: gr.Checkbox
    face: gr.Checkbox
    pose: gr.Code


def pose_section(detect_pose: Callable[[ControlRequest], poses.Detection], draw_pose: Callable[[PoseRequest], tuple],
                 image_box, resize_box, width_box, height_box, made_pose: list, settings: Settings) -> PoseSection:
    """The OpenPose accordion: detect the pose in the photo or start from a preset, edit it as JSON, mirror it,
    draw it; each result shows the map beside the JSON (and in the tab's control map, `made_pose[0]`) and switches the
    mode to the pose JSON (the mode and ControlNet radios, `made_pose[1:]`)."""
    # -- layout -------------------------------------------------------------------------------
    with gr.Accordion("OpenPose: detect the pose in the photo, or start from a preset; edit it as JSON", open=True):
        with gr.Row():
            with gr.Column(scale=5):
                with gr.Row():
                    detector_box = gr.Radio(list(POSE["detector"].choices), value=POSE["detector"].default,
                                            label="Pose detector", info=POSE["detector"].info, scale=2)
                    hands_box = gr.Checkbox(value=POSE["hands"].default, label="hands", info=POSE["hands"].info)
                    face_box = gr.Checkbox(value=POSE["face"].default, label="face", info=POSE["face"].info)
                detect = gr.Button("Detect the pose in the photo")
                pose_status = status_line()
                pose_info = gr.Markdown()
                with gr.Row():
                    preset_box = gr.Dropdown(list(poses.presets()), value=None, label="Or start from a preset",
                                             scale=2)
                    pose_upload = gr.UploadButton("Upload pose JSON", file_types=[".json"], scale=1)
            with gr.Column(scale=5):
                pose_box = gr.Code(value="", language="json", label="The pose (OpenPose JSON)", lines=12, max_lines=20,
                                   interactive=True)
                gr.Markdown("One keypoint a line: x, y in pixels, then confidence (0, 0, 0 = not found). Edit it, "
                            "then draw it.")
                with gr.Row():
                    mirror = gr.Button("Mirror left-right")
                    redraw = gr.Button("Draw this pose")
                edit_status = status_line()  # drawing, mirroring, a preset or an upload: errors show here
                pose_file = gr.File(label="Download the pose (.json)", interactive=False, height=80)
            with gr.Column(scale=4, min_width=240):
                # the pose as drawn, beside the JSON and its buttons (the tab's control map is a screen above)
                pose_view = gr.Image(label="The pose, drawn (the control map)", format="png", interactive=False,
                                     height=300, elem_id="pose-drawn", elem_classes=["pixels"])
    tab_map = made_pose[0]
    made_pose = [pose_view, pose_box, pose_file, pose_info, *made_pose[1:]]

    # -- handlers -----------------------------------------------------------------------------
    def as_pose_mode(text: str, info: str, control_map):
        """After a pose is made: the map, the JSON (box and file), and the mode switched to the pose JSON."""
        return (control_map, text, str(save_pose(text, Folder.of(settings))), info, PREPROCESSORS["pose"].label,
                PREPROCESSORS["pose"].feeds)

    @shows_errors
    def on_detect(image, resize, width, height, detector, hands, face):
        d = detect_pose(control_request(image, PREPROCESSORS["openpose"].label, PREPROCESSORS["openpose"].feeds,
                                        resize=resize, width=width, height=height, detector=detector, hands=hands,
                                        face=face))
        return as_pose_mode(poses.to_json(d.pose), detection_text(d), d.control_map)

    @shows_errors
    def on_draw(pose, width, height, flip=False):
        control_map, text = draw_pose(PoseRequest(pose, width, height, mirror=flip))
        return as_pose_mode(text, "Mirrored left-right: the person's right is now their left." if flip
                            else "Drawn from the pose JSON.", control_map)

    def on_mirror(pose, width, height):
        return on_draw(pose, width, height, flip=True)

    def on_preset(name, width, height):
        return on_draw(poses.presets()[name].read_text(), width, height) if name else [gr.skip()] * 6

    def on_upload_pose(file, width, height):
        path = Path(file if isinstance(file, str) else file.name)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:  # the message names the file, never its server path
            why = "it is not text" if isinstance(exc, UnicodeDecodeError) else (exc.strerror or type(exc).__name__)
            raise error(f"could not read the pose file {path.name}: {why}") from None
        return on_draw(text, width, height)

    # -- events -------------------------------------------------------------------------------
    # progress and errors on the section's status lines: the map, the JSON and the choices stay usable
    drawn = [heavy(detect.click, on_detect, [image_box, resize_box, width_box, height_box, detector_box, hands_box,
                                             face_box], made_pose, settings, api_name="pose", preprocess=False,
                   show_progress_on=pose_status)]
    drawn.append(wired(redraw.click, on_draw, [pose_box, width_box, height_box], made_pose, api_name="draw_pose",
                       show_progress_on=edit_status))
    drawn.append(wired(mirror.click, on_mirror, [pose_box, width_box, height_box], made_pose, api_name="mirror_pose",
                       show_progress_on=edit_status))
    drawn.append(wired(preset_box.input, on_preset, [preset_box, width_box, height_box], made_pose,
                       api_visibility="private", show_progress_on=edit_status))
    drawn.append(wired(pose_upload.upload, on_upload_pose, [pose_upload, width_box, height_box], made_pose,
                       api_visibility="private", show_progress_on=edit_status))
    for event in drawn:
        # the tab's control map is the same picture: the file as it is (no re-encoding), then the drawn pose into
        # view where the page is narrow and the columns stack
        event.success(lambda shown: shown or gr.skip(), pose_view, tab_map, preprocess=False, postprocess=False,
                      queue=False, api_visibility="private", show_progress="hidden")
        event.success(None, None, None, js=INTO_VIEW_JS, queue=False, api_visibility="private")
    return PoseSection(detector_box, hands_box, face_box, pose_box)


def build(
    control: Callable[..., ControlResult],
    preprocess: Callable[[ControlRequest], object],
    detect_pose: Callable[[ControlRequest], poses.Detection],
    draw_pose: Callable[[PoseRequest], tuple[object, str]],
    controlnet_source: Callable[[str, str], str],
    fields: Fields,
    settings: Settings,
    offline: bool = False,
) -> None:
    """Lay out the tab inside the current Blocks and wire its events."""
    fields = fields.with_controlnets()  # its form starts on (and its Model menu lists) the models with ControlNets
    sources = ", ".join(f"**{k}**: `{shown_source(controlnet_source(k, fields.models[0].name))}`" for k in CONTROLNETS)

    # -- layout -------------------------------------------------------------------------------
    gr.Markdown("Upload a picture, turn it into a **control map**, and generate images that follow its structure. "
                f"ControlNets (loaded on first use, sharing the model's UNet, VAE and text encoder): {sources}.")
    with gr.Row():
        with gr.Column(scale=5):
            image_box = gr.Image(label="Photo or control map", type="filepath", sources=["upload", "clipboard"],
                                 height=260)
            mode_box = gr.Radio(list(MODES), value=PREPROCESSORS[DEFAULTS.mode].label, label="Control map")
            net_box = gr.Radio(list(CONTROLNETS), value=DEFAULTS.controlnet, label="ControlNet",
                               info="Canny edges need 'canny'; poses (detected, JSON or a ready drawing) 'openpose'")
            with gr.Row():
                low_box, high_box = (gr.Slider(p.lo, p.hi, value=p.default, step=1, label=p.label)
                                     for p in CANNY.values())
            resize_box = gr.Radio(list(RESIZE_MODES), value=DEFAULTS.resize, label="Fit to the size by",
                                  info="; ".join(f"{k}: {v}" for k, v in RESIZE_MODES.items()))
            show_map = gr.Button("Preview the control map")
            map_status = status_line()
        with gr.Column(scale=5):
            model_box = fields.model()
            prompt_box = fields.prompt(examples=False)
            # the action and its pictures right under the prompt: on a projector's first screen (1280x720)
            with gr.Row():
                run = gr.Button("Generate", variant="primary", scale=3)
                stop = gr.Button("Stop", variant="stop", scale=1)
            status = status_line()
            gallery = gr.Gallery(label="Control map, then the images", format="png", columns=3, height="auto",
                                 object_fit="contain", fit_columns=False, elem_classes=["pixels"],
                                 elem_id="control-gallery")
            negative_box = fields.negative_prompt()
            with gr.Row():
                scale_box = gr.Slider(0, 2, value=DEFAULTS.conditioning_scale, step=0.05, label="Conditioning scale")
                start_box = gr.Slider(0, 1, value=DEFAULTS.guidance_start, step=0.05, label="Guidance start")
                end_box = gr.Slider(0, 1, value=DEFAULTS.guidance_end, step=0.05, label="Guidance end")
            with gr.Row():
                scheduler_box = fields.scheduler("Scheduler")
                steps_box, cfg_box = fields.steps(), fields.cfg_scale(info=None)
            width_box, height_box = fields.size()
            with gr.Row():
                seed_box, images_box = fields.seed(), fields.num_images()
    # the map as the ControlNet sees it under the form; the examples and the pose editor below it
    map_view = gr.Image(label="Control map (what the ControlNet sees)", format="png", interactive=False,
                        height=300, elem_classes=["pixels"])
    info = gr.Markdown()
    # offline examples: drawn scenes for Canny, and pose maps (presets) for OpenPose, with prompts
    gr.Examples(control_examples(offline), inputs=[image_box, mode_box, net_box, prompt_box],
                label="Examples (no download): click one, then Generate", examples_per_page=8)
    pose = pose_section(detect_pose, draw_pose, image_box, resize_box, width_box, height_box,
                        [map_view, mode_box, net_box], settings)

    # -- handlers -----------------------------------------------------------------------------
    @shows_errors
    def on_preprocess(image, mode, controlnet, low, high, resize, width, height, detector=PoseOptions.detector,
                      hands=PoseOptions.hands, face=PoseOptions.face, pose=""):
        return preprocess(control_request(image, mode, controlnet, low, high, resize, width=width, height=height,
                                          detector=detector, hands=hands, face=face, pose=pose))

    @shows_errors
    def on_control(image, mode, controlnet, low, high, resize, conditioning_scale, guidance_start, guidance_end,
                   prompt, negative_prompt, seed, steps, cfg_scale, scheduler, width, height, num_images,
                   detector=PoseOptions.detector, hands=PoseOptions.hands, face=PoseOptions.face, pose="", model="",
                   progress=gr.Progress()):
        req = control_request(image, mode, controlnet, low, high, resize, conditioning_scale, guidance_start,
                              guidance_end, prompt, negative_prompt, seed, steps, cfg_scale, scheduler, width, height,
                              num_images, detector, hands, face, pose, model)
        for item in stream(control, req):
            if isinstance(item, Progress):
                progress((item.step, item.total), desc=item.label, unit="steps")
                yield gr.skip(), gr.skip(), running(item)
            else:
                files = save_control(item, Folder.of(settings))
                note = size_note(item.request.base.width, item.request.base.height,
                                 fields.facts(item.request.base.model).native_size)
                yield files[0][0], files, control_text(item) + (f"  \n{note}" if note else "")

    def on_mode(mode):
        pre = PREPROCESSORS.get(MODES.get(mode, mode))
        if pre is None:
            return [gr.skip()] * 3
        canny = {p.name for p in pre.params} >= set(CANNY)
        return (pre.feeds or gr.skip(), *(gr.Slider(visible=canny) for _ in CANNY))

    # -- events -------------------------------------------------------------------------------
    map_inputs = [image_box, mode_box, net_box, low_box, high_box, resize_box]
    pose_inputs = [pose.detector, pose.hands, pose.face, pose.pose]  # last in both APIs: older calls still fit
    # preprocess=False: plain values and the raw upload; the Engine's checks name a bad value or file
    heavy(show_map.click, on_preprocess, [*map_inputs, width_box, height_box, *pose_inputs], map_view, settings,
          api_name="preprocess", preprocess=False, show_progress_on=map_status)
    # a mode that feeds one ControlNet picks it; the Canny thresholds show only where Canny runs
    mode_box.change(on_mode, mode_box, [net_box, low_box, high_box], api_visibility="private", queue=False,
                    show_progress="hidden")
    fields.follow(model_box, scheduler_box, (width_box, height_box), cfg=cfg_box)
    inputs = [*map_inputs, scale_box, start_box, end_box, prompt_box, negative_box, seed_box, steps_box, cfg_box,
              scheduler_box, width_box, height_box, images_box, *pose_inputs, model_box]
    event = heavy(run.click, on_control, inputs, [map_view, gallery, info], settings, api_name="control",
                  preprocess=False, show_progress_on=status)
    stop_button(stop, event, info)
