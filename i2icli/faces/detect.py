"""Face detection with facexlib's RetinaFace, run statelessly on a downscaled copy."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import torch

import i2icli._compat  # noqa: F401  (before facexlib, which pulls in basicsr-era torchvision names)
from i2icli.errors import InputError, WeightsError
from i2icli.faces.align import FACE_SIZE, alignment_matrix, crop_face
from i2icli.imageio import Picture

# RetinaFace was trained on BGR images with these channel means subtracted.
_BGR_MEAN = (104.0, 117.0, 123.0)


@dataclass(frozen=True)
class DetectedFace:
    """One face in original-image pixel coordinates."""

    box: np.ndarray  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # 5x2: left eye, right eye, nose, left and right mouth corners

    @property
    def size(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def retinaface_network_name(state_dict: dict[str, torch.Tensor]) -> str:
    """resnet50 or mobile0.25, read from the checkpoint's keys."""
    if "body.conv1.weight" in state_dict:
        return "resnet50"
    if any(key.startswith("body.stage1.") for key in state_dict):
        return "mobile0.25"
    raise WeightsError("checkpoint is not a RetinaFace detector (neither resnet50 nor mobilenet0.25 keys)",
                       "pass a RetinaFace resnet50 or mobilenet0.25 checkpoint, or a name from `i2i weights list`")


def build_retinaface(state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():
        # facexlib builds its ResNet-50 with torchvision's deprecated `pretrained=False`.
        warnings.simplefilter("ignore", UserWarning)
        model = RetinaFace(network_name=retinaface_network_name(state_dict), half=False, device=torch.device("cpu"))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


class FaceDetector:
    """Finds faces and their five landmarks.

    Unlike facexlib's ``RetinaFace.detect_faces`` this keeps no per-image state on the model,
    so one detector can serve a whole batch, and it detects on a copy whose longer side is at
    most ``max_side`` pixels: RetinaFace finds faces down to ~16 px, so running it on a
    12-megapixel original costs seconds and finds nothing a 1280 px copy misses for portraits.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, *, max_side: int = 1280):
        self.model = model.to(device).eval()
        self.device = device
        self.max_side = max_side
        self.config = model.cfg

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray, *, threshold: float = 0.97, nms_threshold: float = 0.4) -> list[DetectedFace]:
        from facexlib.detection.retinaface_utils import PriorBox, decode, decode_landm
        from torchvision.ops import nms

        height, width = rgb.shape[:2]
        scale = 1.0
        if self.max_side and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
        image = rgb
        if image.dtype == np.uint16:
            image = (image.astype(np.float32) * (255.0 / 65535.0))
        if scale != 1.0:
            # At least a pixel across: a strip (4000x1) would round to none, which cv2 refuses.
            size = (max(round(width * scale), 1), max(round(height * scale), 1))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(image[:, :, ::-1], dtype=np.float32) - np.array(_BGR_MEAN, dtype=np.float32)
        tensor = torch.from_numpy(bgr.transpose(2, 0, 1).copy()).unsqueeze(0).to(self.device)
        parameter = next(self.model.parameters())
        loc, conf, landms = self.model(tensor.to(parameter.dtype))

        det_h, det_w = tensor.shape[2:]
        priors = PriorBox(self.config, image_size=(det_h, det_w)).forward().to(self.device)
        variance = self.config["variance"]
        boxes = decode(loc[0].float(), priors, variance)
        points = decode_landm(landms[0].float(), priors, variance)
        # Back to original-image pixels: coordinates are normalised to the copy, so times the
        # original's own size (each side was rounded on its own: one scale would not undo both).
        boxes = boxes * torch.tensor([width, height] * 2, device=self.device)
        points = points * torch.tensor([width, height] * 5, device=self.device)
        scores = conf[0, :, 1].float()

        keep = scores > threshold
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        order = nms(boxes, scores, nms_threshold)  # sorted by decreasing score
        boxes, points, scores = boxes[order].cpu().numpy(), points[order].cpu().numpy(), scores[order].cpu().numpy()
        return [
            DetectedFace(box=boxes[i], score=float(scores[i]), landmarks=points[i].reshape(5, 2))
            for i in range(len(scores))
        ]


def select_faces(
    faces: list[DetectedFace], image_shape: tuple[int, ...], *, min_size: float = 0.0, only_center: bool = False
) -> list[DetectedFace]:
    """Drop faces smaller than ``min_size`` pixels; optionally keep only the one nearest the centre."""
    kept = [face for face in faces if face.size >= min_size]
    if only_center and kept:
        centre = np.array([image_shape[1] / 2, image_shape[0] / 2])
        distances = [np.linalg.norm((face.box[:2] + face.box[2:]) / 2 - centre) for face in kept]
        kept = [kept[int(np.argmin(distances))]]
    return kept


def aligned_largest_face(detector: FaceDetector, picture: Picture, role: str, skip_hint: str) -> np.ndarray:
    """The picture's largest face aligned to the 512 template, at full resolution. ``role`` names
    the picture in messages ("source", "exemplar"); ``skip_hint`` says how to go without detection."""
    where = picture.source or role
    faces = detector.detect(picture.rgb)
    if not faces:
        raise InputError(where, f"no face found in the {role}", f"use a photo with a clear face, or {skip_hint}")
    largest = max(faces, key=lambda face: face.size)
    try:
        matrix = alignment_matrix(largest.landmarks)
    except ValueError:
        raise InputError(where, f"the {role}'s face landmarks are degenerate", f"use another photo, or {skip_hint}") from None
    return crop_face(picture.rgb, matrix, FACE_SIZE)
