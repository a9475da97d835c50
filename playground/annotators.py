"""What is loaded beside the pipeline and reused: ControlNets by kind, the OpenPose detector, and auto's choice.

Each is loaded on first use and kept for the process (weights only: no per-request state), under its
own lock, so two requests never load the same weights twice. The Engine asks this shelf for a
ControlNet or for a detection and keeps only its actions. A ControlNet shares the base model's family:
its default comes from the family entry, a `controlnet-<kind>` folder inside a local model, or a setting.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from diffusers import ControlNetModel
from PIL import Image

from playground import poses
from playground.preprocessors import PoseOptions
from playground.errors import ControlNetUnavailable, InvalidRequest
from playground.loading import LoadedModel, controlnet_source, load_controlnet, load_pose_detector, shown_source
from playground.settings import CONTROLNETS, Settings


@dataclass(frozen=True)
class DetectorState:
    """OpenPose's detector as the shelf last found it: the weights, or None and why not."""

    detector: object | None
    note: str  # where the weights came from, or why they could not be loaded
    downloaded: bool  # whether a download was allowed when it was tried


def first_line(exc: Exception, limit: int = 200) -> str:
    """The first line of an exception's message (its type when it has none), at most `limit` characters."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


class Annotators:
    def __init__(self, model: LoadedModel, settings: Settings):
        self.model, self.settings = model, settings
        self._controlnets: dict[str, tuple[ControlNetModel, str]] = {}  # kind -> (weights, source), once each
        self._controlnet_lock = threading.Lock()
        self._detector: DetectorState | None = None
        self._detector_lock = threading.Lock()

    # -- ControlNets ----------------------------------------------------------------------------
    def source(self, kind: str) -> str:
        """Where the `kind` ControlNet is (or would be) loaded from."""
        return controlnet_source(kind, self.settings, self.model)

    def controlnet(self, kind: str) -> tuple[ControlNetModel, str]:
        """The `kind` ControlNet and where it came from, loaded on first use and kept."""
        with self._controlnet_lock:
            if kind not in self._controlnets:
                source = self.source(kind)
                try:
                    self._controlnets[kind] = (load_controlnet(source, self.model), source)
                except Exception as exc:  # offline and not cached, a bad id or folder
                    raise ControlNetUnavailable(
                        f"the {kind} ControlNet ({shown_source(source)}) could not be loaded: {first_line(exc)}. "
                        f"Without a download, set PLAYGROUND_CONTROLNET_{kind.upper()} to a local folder") from None
            return self._controlnets[kind]

    def loaded_controlnets(self) -> dict:
        """kind -> the ControlNets loaded so far (for the anatomy)."""
        with self._controlnet_lock:
            return {kind: net for kind, (net, _) in self._controlnets.items()}

    def preload(self) -> list[str]:
        """Every ControlNet kind and OpenPose's detector loaded now, on the model's device, for a host where only
        start-up's loads reach the device (ZeroGPU: a load inside a lease happens in a forked worker and is lost
        with it). One line each of what was loaded or why not; what failed is tried again on first use."""
        lines = []
        for kind in CONTROLNETS:
            try:
                lines.append(f"{kind} ControlNet from {shown_source(self.controlnet(kind)[1])}")
            except ControlNetUnavailable as exc:
                lines.append(str(exc))
        detector, note = self.pose_detector(download=True)
        lines.append(f"OpenPose's detector from {note}" if detector is not None else note)
        return lines

    # -- pose detection ---------------------------------------------------------------------------
    def pose_detector(self, download: bool) -> tuple[object | None, str]:
        """controlnet_aux's OpenposeDetector from PLAYGROUND_ANNOTATORS, loaded on first use and kept; or None
        and why not. Without `download` a hub repo is read from the local cache only (auto never waits on a
        network); a failure is remembered, so it is not retried on every request, except that a download
        is still tried once when one is asked for."""
        with self._detector_lock:
            state = self._detector
            if state is None or (state.detector is None and download and not state.downloaded):
                state = self._load_detector(download)
                self._detector = state
            return state.detector, state.note

    def _load_detector(self, download: bool) -> DetectorState:
        source = self.settings.annotators
        try:
            return DetectorState(load_pose_detector(source, self.model.device, download=download),
                                 shown_source(source), download)
        except Exception as exc:  # not cached, offline, a bad folder, a broken file
            return DetectorState(None, f"OpenPose's weights ({shown_source(source)}) could not be loaded: "
                                       f"{self._why_not(source, download, exc)}", download)

    @staticmethod
    def _why_not(source: str, download: bool, exc: Exception) -> str:
        """Why the detector's weights are not here, with advice that can work on this machine."""
        hub = "/" in source and not source.startswith(("/", ".", "~")) and not Path(source).expanduser().is_dir()
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        unreachable = offline or "local_files_only" in str(exc) or "Connection" in type(exc).__name__ \
            or "LocalEntryNotFound" in type(exc).__name__
        if hub and not download:
            how = ("this machine is offline (HF_HUB_OFFLINE)" if offline else
                   "pick the openpose detector to download them from the Hugging Face Hub (about 490 MB)")
            return f"they are not on this machine, and auto never downloads; {how}"
        if hub and unreachable:
            return "they are not on this machine, and the Hugging Face Hub cannot be reached from it"
        return first_line(exc).rstrip(".")

    def pick_detector(self, options: PoseOptions) -> tuple[str, object | None, str]:
        """(which detector runs, its weights for openpose, why): auto takes OpenPose's where they are on the
        machine, else MediaPipe; a detector asked for by name must be there."""
        note = ""
        if options.detector != "mediapipe":
            detector, note = self.pose_detector(download=options.detector == "openpose")
            if detector is not None:
                return "openpose", detector, ("asked for" if options.detector == "openpose"
                                              else f"chosen by auto: weights from {note}")
            if options.detector == "openpose":
                raise InvalidRequest(f"{note}. Set PLAYGROUND_ANNOTATORS to a folder with body_pose_model.pth, "
                                     "hand_pose_model.pth and facenet.pth, or choose the mediapipe detector")
        missing = poses.mediapipe_available()
        if missing is not None:
            raise InvalidRequest(missing + (f"; and {note}" if note else ""))
        why = "asked for" if options.detector == "mediapipe" else f"chosen by auto: {note}"
        if options.hands or options.face:
            why += "; MediaPipe draws the body only (hands and face need OpenPose's weights)"
        return "mediapipe", None, why

    def detect(self, image: Image.Image, options: PoseOptions) -> poses.Detection:
        """Run the chosen pose detector on a fitted image; "no person found" is an error, never a black map."""
        used, detector, why = self.pick_detector(options)
        start = time.perf_counter()
        pose = poses.detect_mediapipe(image) if detector is None else \
            poses.detect_openpose(detector, image, hands=options.hands, face=options.face)
        seconds = time.perf_counter() - start
        if not pose.people:  # the other detector is advice only where it can run
            other = used == "openpose" or self._detector is not None and self._detector.detector is not None
            raise InvalidRequest(f"no person found in the photo by the {used} detector; try a photo with a person "
                                 f"in full view{', the other detector' if other else ''} or a pose preset")
        return poses.Detection(pose, poses.draw(pose, *image.size), used, why, seconds)
