"""Event frames people can look at: a stacked histogram (or raw events) as an image, with boxes.

ON events are drawn red and OFF events blue on a white background (the convention of event-camera papers); the
colour saturates with the event count. Boxes get one colour per class and a label.

Usage:
    >>> from yolo_etram.data.render import render_histogram, draw_boxes
    >>> img = render_histogram(hist)  # (20, H, W) uint8 -> (H, W, 3) BGR uint8
    >>> img = draw_boxes(img, xyxy, cls, names={0: "pedestrian"})
    >>> plot_batch(batch, names, "train_batch0.jpg")  # the labeled frames of a training batch, with their boxes
"""

from __future__ import annotations

import numpy as np

CLASS_COLORS = [
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
    (23, 204, 146),
    (134, 219, 61),
]  # BGR, Ultralytics' palette order


def render_histogram(hist: np.ndarray, saturation: int = 4) -> np.ndarray:
    """A window's frame to a BGR image: ON red, OFF blue, white background.

    Unsigned and float frames are ``(2*nbins, H, W)`` (channels ``p*nbins + b``: histograms, voxel grids); signed int8
    frames (VTEI, mixed-density stacks) hold one signed value per bin: positive values draw as ON, negative as OFF."""
    if hist.dtype.kind == "i":
        v = hist.astype(np.float32)
        return render_counts(np.clip(v, 0, None).sum(0), np.clip(-v, 0, None).sum(0), saturation)
    nbins = hist.shape[0] // 2
    off = hist[:nbins].astype(np.float32).sum(0)
    on = hist[nbins:].astype(np.float32).sum(0)
    return render_counts(on, off, saturation)


def render_counts(on: np.ndarray, off: np.ndarray, saturation: int = 4) -> np.ndarray:
    """ON and OFF event counts per pixel to a BGR image (see :func:`render_histogram`)."""
    a_on = np.clip(on / saturation, 0, 1)
    a_off = np.clip(off / saturation, 0, 1)
    img = np.full((*on.shape, 3), 255.0, np.float32)
    img[..., 1] *= (1 - a_on) * (1 - a_off)  # green fades wherever there are events
    img[..., 2] *= 1 - a_off  # OFF removes red -> blue
    img[..., 0] *= 1 - a_on  # ON removes blue -> red
    return img.astype(np.uint8)


def draw_boxes(
    img: np.ndarray,
    xyxy: np.ndarray,
    cls: np.ndarray,
    names: dict | None = None,
    conf: np.ndarray | None = None,
    thickness: int = 1,
) -> np.ndarray:
    """Draw ``xyxy`` boxes (pixels of ``img``) with class colours and ``name conf`` labels; returns ``img``."""
    import cv2

    for i, (box, c) in enumerate(zip(np.asarray(xyxy).reshape(-1, 4), np.asarray(cls).reshape(-1))):
        color = CLASS_COLORS[int(c) % len(CLASS_COLORS)]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thickness)
        label = (names or {}).get(int(c), str(int(c)))
        if conf is not None:
            label += f" {float(conf[i]):.2f}"
        cv2.putText(img, label, (x1, max(y1 - 3, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1, cv2.LINE_AA)
    return img


def plot_event_batch(
    img: np.ndarray, boxes_per_frame: list, names: dict, fname, max_frames: int = 16, titles: list[str] | None = None
) -> None:
    """Save a grid of event frames with boxes (training batches, validation labels or predictions).

    Args:
        img: ``(F, 2*nbins, H, W)`` histograms (counts).
        boxes_per_frame: per frame, ``(xyxy, cls, conf or None)`` in pixels of ``img``, or None.
        names: class names.
        fname: output image path.
        max_frames: at most this many frames (a square-ish grid).
        titles: optional caption per frame.
    """
    import cv2

    n = min(len(img), max_frames)
    if n == 0:
        return
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w = img.shape[-2:]
    canvas = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i in range(n):
        frame = render_histogram(np.asarray(img[i]))
        if boxes_per_frame[i] is not None:
            xyxy, cls, conf = boxes_per_frame[i]
            draw_boxes(frame, xyxy, cls, names, conf)
        if titles:
            cv2.putText(frame, titles[i], (2, h - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        r, c = divmod(i, cols)
        canvas[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = frame
    cv2.imwrite(str(fname), canvas)


def plot_batch(batch: dict, names: dict, fname, max_frames: int = 16, preds: list[dict] | None = None) -> None:
    """Render the labeled frames of a collated batch (stored resolution) with their boxes (or ``preds``, one dict of
    ``bboxes``/``cls``/``conf`` per frame) to ``fname``."""
    from ultralytics.utils.ops import xywh2xyxy

    img = batch["img"]
    frames = img.reshape(-1, *img.shape[-3:])
    hp, wp = frames.shape[-2:]
    h, w = batch.get("stored_hw", (hp, wp))
    keep = np.flatnonzero(batch["labeled"].cpu().numpy())[:max_frames].tolist()
    boxes = []
    for f in keep:
        if preds is not None:
            p = preds[f]
            boxes.append((p["bboxes"].cpu().numpy(), p["cls"].cpu().numpy(), p["conf"].cpu().numpy()))
            continue
        sel = (batch["batch_idx"] == f).cpu()
        xyxy = xywh2xyxy(batch["bboxes"][sel].cpu().numpy() * np.array([wp, hp, wp, hp]))
        boxes.append((xyxy, batch["cls"][sel].cpu().numpy().reshape(-1), None))
    if keep:
        titles = [batch["im_file"][f] for f in keep]
        plot_event_batch(frames[keep, :, :h, :w].cpu().numpy(), boxes, names, fname, max_frames, titles)
