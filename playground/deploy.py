"""Deploy the playground to a Hugging Face Space in one command.

    python -m playground.deploy USER/NAME --hardware cpu-basic|t4-small|zerogpu [--dry-run] [--private]

It creates the Space (Gradio SDK; an existing one is kept and updated), uploads a snapshot of what the app
needs at run time (app.py, the playground package without its training code, the bundled models and
assets; no tests, benchmarks, docs, CI files or history) through the Hub's own upload, so the weights and
images go up as the Hub stores binary files and no LFS set-up is needed; writes the Space's README (its
front matter: SDK, Python, the weights fetched at build time) and requirements for that hardware; sets
the variables a public Space should have; then waits for the build and calls `/generate` once. `--dry-run`
prints every file and the total size and changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from playground.settings import ANNOTATORS, CONTROLNETS, SD15

ROOT = Path(__file__).resolve().parent.parent
# what the app reads at run time, relative to the repository; the training code (playground/tiny) stays behind
RUNTIME = ("app.py", "playground", "assets")
LEFT_OUT_DIRS = ("playground/tiny", "__pycache__")
SPACE_REQUIREMENTS = "requirements-space.txt"  # uploaded as the Space's requirements.txt
APP_PYTHON = "3.11"  # the Python CI runs the app on

# the files `from_pretrained` reads for SD 1.5 in fp16 (the variant the GPU hardware loads), fetched at build time
SD15_FP16 = ("model_index.json", "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json",
             "text_encoder/config.json", "text_encoder/model.fp16.safetensors",
             "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
             "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
             "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
             "safety_checker/config.json", "safety_checker/model.fp16.safetensors")
CONTROLNET_FP16 = ("config.json", "diffusion_pytorch_model.fp16.safetensors")
POSE_WEIGHTS = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")  # OpenPose's detector
# limits every public Space gets (docs/configuration.md has each)
PUBLIC_LIMITS = {"MAX_STEPS": "50", "MAX_IMAGES": "2", "MAX_GRID_CELLS": "16", "QUEUE_SIZE": "32",
                 "MAX_UPLOAD_MB": "10", "SESSION_JOBS": "2"}


@dataclass(frozen=True)
class Hardware:
    """One kind of Space hardware: what the Hub calls it, the Python it runs, what it loads and fetches."""

    name: str  # this command's name for it
    flavor: str  # the Hub's SpaceHardware value
    python: str  # the front matter's python_version
    gpu: bool  # "auto" loads SD 1.5 in fp16 there (else the two bundled models)
    variables: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def preload(self) -> list[str]:
        """preload_from_hub: the weights this hardware loads, fetched when the Space is built (not at the first
        request): OpenPose's detector everywhere (the Space has no MediaPipe); with a GPU, SD 1.5 and its two
        ControlNets in fp16 too."""
        lines = [f"{ANNOTATORS} {','.join(POSE_WEIGHTS)}"]
        if self.gpu:
            lines.insert(0, f"{SD15} {','.join(SD15_FP16)}")
            lines[1:1] = [f"{repo} {','.join(CONTROLNET_FP16)}" for repo in CONTROLNETS.values()]
        return lines


HARDWARE = {h.name: h for h in (
    Hardware("cpu-basic", "cpu-basic", APP_PYTHON, gpu=False,
             variables={**PUBLIC_LIMITS, "MAX_SIZE": "512"},
             note="2 vCPU: the two bundled models, about a second an image"),
    Hardware("t4-small", "t4-small", APP_PYTHON, gpu=True,
             variables={**PUBLIC_LIMITS, "MAX_SIZE": "768", "PLAYGROUND_VARIANT": "fp16"},
             note="one T4: SD 1.5 in fp16, a few seconds an image at 512x512"),
    Hardware("zerogpu", "zero-a10g", "3.12", gpu=True,  # ZeroGPU runs Python 3.12 (or 3.10), not 3.11
             variables={**PUBLIC_LIMITS, "MAX_SIZE": "768", "PLAYGROUND_VARIANT": "fp16"},
             note="a GPU lent per call: SD 1.5 in fp16; each action asks for a lease sized by its steps"),
)}


@dataclass(frozen=True)
class Plan:
    """What a deploy uploads: repository files by their path in the Space, and files it writes."""

    hardware: Hardware
    files: dict[str, Path]  # path in the Space -> file here
    written: dict[str, bytes]  # path in the Space -> content made for this hardware

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.values()) + sum(len(b) for b in self.written.values())

    def lines(self) -> list[str]:
        """The plan as printed by --dry-run: every file with its size, then the totals and the Space's settings."""
        rows = [(path, src.stat().st_size) for path, src in self.files.items()]
        rows += [(f"{path} (written for {self.hardware.name})", len(b)) for path, b in self.written.items()]
        out = [f"{size:>12,}  {path}" for path, size in sorted(rows)]
        out.append(f"{len(rows)} files, {self.total_bytes / 1e6:.1f} MB")
        out.append(f"hardware: {self.hardware.flavor} ({self.hardware.note}); Python {self.hardware.python}")
        out += [f"fetched at build time: {line}" for line in self.hardware.preload()]
        out += [f"variable: {k}={v}" for k, v in sorted(self.hardware.variables.items())]
        return out


def runtime_files(root: Path = ROOT) -> dict[str, Path]:
    """Every file the app reads at run time, by its path relative to `root`."""
    files = {}
    for top in RUNTIME:
        base = root / top
        for path in ([base] if base.is_file() else sorted(base.rglob("*"))):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not any(f"/{d}/" in f"/{rel}" for d in LEFT_OUT_DIRS) and path.suffix != ".pyc":
                files[rel] = path
    return files


def space_readme(hardware: Hardware, gradio_version: str) -> str:
    """The Space's README: its configuration as front matter, then what it is."""
    preload = "".join(f"  - {line}\n" for line in hardware.preload())
    return (f"---\ntitle: Diffusion Playground\nemoji: 🔬\ncolorFrom: indigo\ncolorTo: pink\nsdk: gradio\n"
            f"sdk_version: {gradio_version}\napp_file: app.py\npython_version: \"{hardware.python}\"\n"
            f"suggested_hardware: {hardware.flavor}\n"
            f"short_description: See how latent diffusion works, step by step\npreload_from_hub:\n{preload}---\n\n"
            "# Diffusion Playground\n\nA hands-on Stable Diffusion playground that lets you *see* how latent diffusion "
            "works: the model's guess of the clean image at every step, CLIP's 77 tokens, which word paints where, "
            "what classifier-free guidance amplifies, schedulers side by side, ControlNet, and the evolution from "
            "SD 1.5 to SD3. With no GPU it runs the two small models the project trained (a U-Net and an MMDiT).\n")


def plan(hardware: str, root: Path = ROOT) -> Plan:
    """The deploy's plan for `hardware`: nothing is read from or sent to the Hub."""
    import gradio  # noqa: PLC0415 (its version is the Space's sdk_version: the one the tests ran)

    hw = HARDWARE[hardware]
    files = runtime_files(root)
    written = {"README.md": space_readme(hw, gradio.__version__).encode(),
               "requirements.txt": (root / SPACE_REQUIREMENTS).read_bytes()}
    return Plan(hw, files, written)


class DeployError(Exception):
    """A deploy that cannot go on, in one sentence for the person who ran it."""


def explained(exc: BaseException, repo_id: str, user: str = "") -> DeployError:
    """One sentence for what went wrong talking to the Hub."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError  # noqa: PLC0415

    if isinstance(exc, LocalTokenNotFoundError):
        return DeployError("no Hugging Face token here: run `hf auth login` or set HF_TOKEN to a token with write "
                           "access")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HfHubHTTPError) and status == 401:
        return DeployError("the Hub refused the token (401): make a new one with write access and set HF_TOKEN")
    if isinstance(exc, HfHubHTTPError) and status in (403, 404, 409):
        who = f" as {user}" if user else ""
        return DeployError(f"{repo_id} cannot be written{who} (HTTP {status}): the name belongs to someone else, or "
                           "the token cannot write there; pick a name under your own account")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if isinstance(exc, HfHubHTTPError):
        return DeployError(f"the Hub answered HTTP {status} for {repo_id}: {first}")
    return DeployError(f"the Hugging Face Hub could not be reached ({type(exc).__name__}: {first}); check the "
                       "network, or run with --dry-run to see the plan without it")


def owner_check(repo_id: str, me: dict) -> None:
    """The Space's owner must be the token's user or one of their organisations."""
    owner = repo_id.split("/")[0]
    mine = {me.get("name", "")} | {org.get("name", "") for org in me.get("orgs", [])}
    if owner not in mine:
        raise DeployError(f"{repo_id} belongs to {owner}, and the token is {me.get('name', '?')}'s "
                          f"(who can write under: {', '.join(sorted(n for n in mine if n))}); pick one of those")


def upload(api, repo_id: str, p: Plan, private: bool = False) -> None:
    """Create or keep the Space, set its hardware and variables, and upload the plan in one commit (files the
    plan no longer has are deleted, so the Space holds the snapshot and nothing older)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete  # noqa: PLC0415

    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", space_hardware=p.hardware.flavor,
                    private=private, exist_ok=True)
    api.request_space_hardware(repo_id, p.hardware.flavor)
    for key, value in sorted(p.hardware.variables.items()):
        api.add_space_variable(repo_id, key, value)
    ops = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(src)) for path, src in p.files.items()]
    ops += [CommitOperationAdd(path_in_repo=path, path_or_fileobj=content) for path, content in p.written.items()]
    keep = set(p.files) | set(p.written) | {".gitattributes"}
    ops += [CommitOperationDelete(path_in_repo=path)
            for path in api.list_repo_files(repo_id, repo_type="space") if path not in keep]
    api.create_commit(repo_id, operations=ops, repo_type="space",
                      commit_message=f"Diffusion Playground for {p.hardware.name}")


def failing_line(lines: Iterable[str]) -> str:
    """The line of a build or run log that says what failed: the last one naming an error, else the last one."""
    kept = [line.strip() for line in lines if line.strip()]
    named = [line for line in kept if any(w in line for w in ("Error", "error:", "ERROR", "Traceback", "failed"))]
    return (named or kept or ["(the log is empty)"])[-1]


def smoke(src: str, token: str | None = None) -> str:
    """Call `/generate` once on a running app (a Space id or a URL) with a small request; what it answered."""
    from gradio_client import Client  # noqa: PLC0415

    client = Client(src, token=token, verbose=False)
    params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]["parameters"]
    values = {p["parameter_name"]: p["parameter_default"] if p.get("parameter_has_default") else "" for p in params}
    values.update(prompt="a red circle on a white background", steps=8, seed=1)  # the model's own size and CFG
    _, gallery, info, seed = client.predict(**values, api_name="/generate")
    if not gallery:
        raise DeployError(f"/generate on {src} returned no image ({info!r})")
    return f"/generate answered: {len(gallery)} image(s), seed {seed}"


def wait_and_check(api, repo_id: str, timeout: float, say: Callable[[str], None]) -> None:
    """Wait for the build; when the Space runs, one `/generate`; else the log's failing line."""
    runtime = api.wait_for_space(repo_id, timeout=timeout, poll_interval=10)
    if runtime.stage != "RUNNING":
        build = runtime.stage in ("BUILD_ERROR", "CONFIG_ERROR")
        line = failing_line(api.fetch_space_logs(repo_id, build=build))
        raise DeployError(f"{repo_id} is {runtime.stage}; the {'build' if build else 'run'} log says: {line}")
    say(f"{repo_id} is running; {smoke(repo_id, token=getattr(api, 'token', None))}")


def main(argv: list[str] | None = None, api_factory: Callable | None = None, say: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m playground.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("space", metavar="USER/NAME", help="the Space's id")
    parser.add_argument("--hardware", required=True, choices=list(HARDWARE))
    parser.add_argument("--dry-run", action="store_true", help="print every file and the total size; change nothing")
    parser.add_argument("--private", action="store_true", help="a private Space (a new one only)")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for the build and its first /generate")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the build (default 1800)")
    args = parser.parse_args(argv)
    if args.space.count("/") != 1 or not all(args.space.split("/")):
        parser.error(f"{args.space!r} is not USER/NAME")
    p = plan(args.hardware)
    if args.dry_run:
        for line in p.lines():
            say(line)
        return 0
    try:
        from huggingface_hub import HfApi  # noqa: PLC0415

        api = (api_factory or HfApi)()
        me: dict = {}
        try:
            me = api.whoami()
            owner_check(args.space, me)
            say(f"uploading {len(p.files) + len(p.written)} files ({p.total_bytes / 1e6:.1f} MB) to {args.space} ...")
            upload(api, args.space, p, private=args.private)
            say(f"uploaded: https://huggingface.co/spaces/{args.space}")
            if not args.no_wait:
                say(f"waiting for the build (up to {args.timeout:.0f} s) ...")
                wait_and_check(api, args.space, args.timeout, say)
        except DeployError:
            raise
        except TimeoutError:
            raise DeployError(f"{args.space} was still building after {args.timeout:.0f} s; see its logs on the Hub")
        except Exception as exc:  # the Hub's answers and the network's failures, each said in one sentence
            raise explained(exc, args.space, me.get("name", "")) from None
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
