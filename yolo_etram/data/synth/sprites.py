"""Procedural, antialiased side views of each kind of road user (cached per object by ``sprite_bank``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .scene import _bilinear_sample


class _Canvas:
    """Paint flat shapes on a supersampled grid. Coordinates are in units of the sprite height: x in [0, aspect],
    y in [0, 1] from the top. ``result`` gives premultiplied intensity and alpha at sprite resolution."""

    def __init__(self, w: int, h: int, texture: np.ndarray):
        self.w, self.h = w, h
        self.ss = 4 if h < 24 else 2
        self.aspect = w / h
        self.u = ((np.arange(w * self.ss) + 0.5) / (self.ss * h))[None, :]
        self.v = ((np.arange(h * self.ss) + 0.5) / (self.ss * h))[:, None]
        self.value = np.zeros((h * self.ss, w * self.ss), dtype=np.float32)
        self.alpha = np.zeros((h * self.ss, w * self.ss), dtype=bool)
        self.texture = _bilinear_sample(
            texture,
            np.linspace(0, texture.shape[0] - 1, h * self.ss),
            np.linspace(0, texture.shape[1] - 1, w * self.ss),
        )

    def paint(
        self,
        mask: np.ndarray,
        value: float,
        textured: float = 0.06,
        shade: tuple[float, float, float, float] | None = None,
    ) -> None:
        """Fill ``mask`` with ``value``, modulated by the object's texture and optionally by a vertical shading
        ``(y_top, y_bottom, gain_top, gain_bottom)`` (light from the sky: lighter on top, darker below)."""
        mask = np.broadcast_to(mask, self.value.shape)
        val = value * (1 + textured * self.texture)
        if shade is not None:
            y0, y1, g0, g1 = shade
            val = val * (g0 + (g1 - g0) * np.clip((self.v - y0) / (y1 - y0), 0, 1))
        self.value[mask] = np.clip(val, 0.02, 1.0)[mask]
        self.alpha |= mask

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return (self.u >= x0) & (self.u < x1) & (self.v >= y0) & (self.v < y1)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float | None = None) -> np.ndarray:
        ry = rx if ry is None else ry
        return ((self.u - cx) / rx) ** 2 + ((self.v - cy) / ry) ** 2 <= 1.0

    def ring(self, cx: float, cy: float, r_out: float, r_in: float) -> np.ndarray:
        d2 = (self.u - cx) ** 2 + (self.v - cy) ** 2
        return (d2 <= r_out**2) & (d2 >= r_in**2)

    def capsule(self, p0: tuple[float, float], p1: tuple[float, float], r: float) -> np.ndarray:
        (x0, y0), (x1, y1) = p0, p1
        dx, dy = x1 - x0, y1 - y0
        L2 = max(dx * dx + dy * dy, 1e-12)
        s = np.clip(((self.u - x0) * dx + (self.v - y0) * dy) / L2, 0, 1)
        return (self.u - x0 - s * dx) ** 2 + (self.v - y0 - s * dy) ** 2 <= r * r

    def polygon(self, pts: list[tuple[float, float]]) -> np.ndarray:
        """Convex polygon, vertices in either orientation."""
        inside_pos = np.ones(self.value.shape, dtype=bool)
        inside_neg = np.ones(self.value.shape, dtype=bool)
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
            cross = (x1 - x0) * (self.v - y0) - (y1 - y0) * (self.u - x0)
            inside_pos &= cross >= 0
            inside_neg &= cross <= 0
        return inside_pos | inside_neg

    def result(self) -> np.ndarray:
        """(2, h, w) float32: premultiplied intensity and coverage."""
        ss, h, w = self.ss, self.h, self.w
        a = self.alpha.astype(np.float32)

        def pool(img: np.ndarray) -> np.ndarray:
            return img.reshape(h, ss, w, ss).mean(axis=(1, 3))

        return np.stack([pool(self.value * a), pool(a)]).astype(np.float32)


def _make_look(kind: str, rng: np.random.Generator) -> dict:
    """Colours (grey levels) and texture of one object, fixed for its life."""
    # car paints: black, dark, silver/grey, white; mid greys close to asphalt are rarer, as on real roads
    paint = float(rng.choice([0.05, 0.09, 0.14, 0.45, 0.55, 0.65, 0.78, 0.88, 0.93]) * rng.uniform(0.92, 1.08))
    look = {
        "body": paint,
        "glass": float(rng.uniform(0.06, 0.2) if rng.random() < 0.75 else rng.uniform(0.55, 0.75)),
        "skin": float(rng.uniform(0.35, 0.75)),
        "hair": float(rng.uniform(0.05, 0.45)),
        "shirt": float(rng.uniform(0.05, 0.9)),
        "pants": float(rng.uniform(0.05, 0.6)),
        "frame": float(rng.uniform(0.1, 0.8)),
        "accent": float(rng.uniform(0.1, 0.9)),
        "windows": int(rng.integers(5, 9)),
        "texture": rng.standard_normal((6, 10)).astype(np.float32),
    }
    if kind in ("bus", "tram"):
        look["body"] = float(rng.uniform(0.55, 0.9))
    if kind == "truck":
        look["box"] = float(rng.uniform(0.6, 0.92))
    return look


def _draw_sprite(kind: str, w: int, h: int, facing: int, frame: int, look: dict) -> np.ndarray:
    """Premultiplied intensity and alpha (2, h, w) of an object whose box is w x h pixels, facing +X or -X."""
    c = _Canvas(w, h, look["texture"])
    _DRAWERS[kind](c, look, frame)
    pa = c.result()
    return np.ascontiguousarray(pa[:, :, ::-1]) if facing < 0 else pa


def _draw_wheel(c: _Canvas, x: float, y: float, r: float) -> None:
    c.paint(c.ellipse(x, y, r), 0.05, 0.0)
    c.paint(c.ellipse(x, y, 0.5 * r), 0.45)
    c.paint(c.ellipse(x, y, 0.15 * r), 0.2, 0.0)


def _draw_car(c: _Canvas, look: dict, frame: int) -> None:
    A, body = c.aspect, look["body"]
    c.paint(c.rect(0.12 * A, 0.7, 0.9 * A, 0.94), 0.04, 0.0)  # dark underbody and its shadow
    c.paint(
        c.polygon([(0.2 * A, 0.45), (0.32 * A, 0.0), (0.72 * A, 0.0), (0.87 * A, 0.45)]),
        body,
        shade=(0.0, 0.45, 1.15, 0.9),
    )
    c.paint(c.rect(0.34 * A, 0.0, 0.7 * A, 0.06), min(1.0, body * 1.2 + 0.1))  # roof seen from above
    c.paint(c.polygon([(0.25 * A, 0.43), (0.35 * A, 0.1), (0.5 * A, 0.1), (0.5 * A, 0.43)]), look["glass"])
    c.paint(c.polygon([(0.53 * A, 0.43), (0.53 * A, 0.1), (0.7 * A, 0.1), (0.82 * A, 0.43)]), look["glass"])
    lower = c.rect(0.0, 0.42, A, 0.8) | c.ellipse(0.04 * A, 0.61, 0.04 * A, 0.19)
    lower |= c.ellipse(0.96 * A, 0.61, 0.04 * A, 0.19)
    c.paint(lower, body, shade=(0.42, 0.8, 1.2, 0.65))
    c.paint(c.rect(0.02 * A, 0.44, 0.98 * A, 0.47), min(1.0, body * 1.3 + 0.15))  # highlight on the shoulder line
    c.paint(c.rect(0.02 * A, 0.62, 0.98 * A, 0.65), body * 0.6)  # trim
    c.paint(c.rect(0.515 * A, 0.45, 0.525 * A, 0.78), body * 0.6)  # door gap
    c.paint(c.rect(0.0, 0.72, A, 0.8), 0.12)  # bumpers and sills
    c.paint(c.rect(0.96 * A, 0.47, A, 0.56), 0.95, 0.0)  # headlight
    c.paint(c.rect(0.0, 0.46, 0.03 * A, 0.55), 0.25, 0.0)  # tail light
    for xw in (0.19 * A, 0.8 * A):
        c.paint(c.ellipse(xw, 0.8, 0.22), 0.05, 0.0)  # wheel arch
        _draw_wheel(c, xw, 0.82, 0.18)


def _draw_bus(c: _Canvas, look: dict, frame: int) -> None:
    A, body = c.aspect, look["body"]
    c.paint(c.rect(0.05 * A, 0.85, 0.95 * A, 0.96), 0.04, 0.0)  # underbody shadow
    c.paint(c.rect(0.02, 0.03, A - 0.02, 0.88) | c.rect(0.0, 0.08, A, 0.88), body, shade=(0.0, 0.88, 1.15, 0.7))
    c.paint(c.rect(0.3 * A, 0.0, 0.5 * A, 0.05), body * 0.8)  # roof unit
    n = look["windows"]
    for i in range(n):
        x0 = 0.2 * A + i * 0.76 * A / n
        c.paint(c.rect(x0, 0.17, x0 + 0.76 * A / n - 0.05, 0.46), look["glass"])
    c.paint(c.rect(0.94 * A, 0.12, A - 0.01, 0.55), look["glass"])  # windscreen
    c.paint(c.rect(0.07 * A, 0.17, 0.16 * A, 0.86), look["glass"] * 0.8)  # door
    c.paint(c.rect(0.0, 0.6, A, 0.66), look["accent"])  # livery stripe
    c.paint(c.rect(0.0, 0.8, A, 0.88), 0.15)  # skirt
    for xw in (0.15 * A, 0.8 * A):
        _draw_wheel(c, xw, 0.9, 0.1)


def _draw_truck(c: _Canvas, look: dict, frame: int) -> None:
    A = c.aspect
    c.paint(c.rect(0.0, 0.0, 0.76 * A, 0.78), look["box"], shade=(0.0, 0.78, 1.1, 0.75))
    c.paint(c.rect(0.02 * A, 0.3, 0.74 * A, 0.34), look["accent"])
    c.paint(c.rect(0.0, 0.76, A, 0.9), 0.05, 0.0)  # chassis and shadow
    c.paint(
        c.rect(0.78 * A, 0.22, A, 0.86) | c.ellipse(0.95 * A, 0.3, 0.05 * A, 0.08),
        look["body"],
        shade=(0.22, 0.86, 1.15, 0.7),
    )
    c.paint(c.rect(0.84 * A, 0.28, 0.98 * A, 0.5), look["glass"])
    for xw in (0.12 * A, 0.24 * A, 0.88 * A):
        _draw_wheel(c, xw, 0.88, 0.12)


def _draw_tram(c: _Canvas, look: dict, frame: int) -> None:
    A, body = c.aspect, look["body"]
    c.paint(
        c.capsule((0.45 * A, 0.12), (0.5 * A, 0.01), 0.01)
        | c.capsule((0.55 * A, 0.12), (0.5 * A, 0.01), 0.01)
        | c.rect(0.47 * A, 0.0, 0.53 * A, 0.02),
        0.15,
        0.0,
    )  # pantograph
    c.paint(c.rect(0.0, 0.12, A, 0.93), body, shade=(0.12, 0.93, 1.1, 0.7))
    for i in range(int(A / 0.55)):
        x0 = 0.15 + i * 0.55
        if x0 + 0.4 < A - 0.1:
            c.paint(c.rect(x0, 0.25, x0 + 0.4, 0.55), look["glass"])
    c.paint(c.rect(0.0, 0.62, A, 0.66), look["accent"])
    c.paint(c.rect(0.05, 0.9, A - 0.05, 1.0), 0.05, 0.0)  # bogies


def _draw_pedestrian(c: _Canvas, look: dict, frame: int) -> None:
    A = c.aspect
    xc = A / 2
    phase = 2 * math.pi * frame / 8
    swing = 0.42 * math.sin(phase)
    hip, shoulder, leg, arm = (xc, 0.5), (xc, 0.19), 0.47, 0.3
    for s, shade in ((-1, 0.8), (1, 1.0)):  # far limbs first, a little darker
        foot = (xc + leg * math.sin(s * swing), hip[1] + leg * math.cos(s * swing))
        c.paint(c.capsule(hip, foot, 0.05), look["pants"] * shade)
        hand = (xc - arm * math.sin(s * swing * 0.8), shoulder[1] + arm * math.cos(s * swing * 0.8))
        c.paint(c.capsule(shoulder, hand, 0.035), look["shirt"] * shade * 0.9)
        if s < 0:
            c.paint(c.capsule(shoulder, hip, 0.1) | c.rect(xc - 0.1, 0.17, xc + 0.1, 0.52), look["shirt"])
    c.paint(c.ellipse(xc + 0.01, 0.075, 0.06, 0.07), look["skin"])
    c.paint(c.ellipse(xc - 0.01, 0.055, 0.065, 0.05), look["hair"])


def _draw_bicycle(c: _Canvas, look: dict, frame: int) -> None:
    A = c.aspect
    r = 0.2
    rear, front = (r + 0.01, 0.79), (A - r - 0.01, 0.79)
    crank, seat, head = (0.47 * A, 0.79), (0.4 * A, 0.5), (0.74 * A, 0.47)
    phase = 2 * math.pi * frame / 6
    pedal_far = (crank[0] - 0.08 * math.cos(phase), crank[1] - 0.08 * math.sin(phase))
    pedal_near = (crank[0] + 0.08 * math.cos(phase), crank[1] + 0.08 * math.sin(phase))
    hip, shoulder = (seat[0], seat[1] - 0.04), (0.58 * A, 0.2)
    _draw_leg(c, hip, pedal_far, look["pants"] * 0.8)
    for x, y in (rear, front):
        c.paint(c.ring(x, y, r, r - 0.035), 0.06, 0.0)
        c.paint(c.ellipse(x, y, 0.02), 0.4, 0.0)
    for p, q in ((rear, seat), (seat, crank), (crank, rear), (seat, head), (head, front), (crank, head)):
        c.paint(c.capsule(p, q, 0.018), look["frame"], 0.0)
    c.paint(c.capsule(head, (0.72 * A, 0.38), 0.018), 0.1, 0.0)
    c.paint(c.capsule(hip, shoulder, 0.08), look["shirt"])
    c.paint(c.capsule(shoulder, (0.71 * A, 0.38), 0.03), look["shirt"] * 0.9)
    c.paint(c.ellipse(shoulder[0] + 0.04, 0.1, 0.065, 0.07), look["skin"])
    c.paint(c.ellipse(shoulder[0] + 0.03, 0.07, 0.075, 0.05), look["accent"])  # helmet
    _draw_leg(c, hip, pedal_near, look["pants"])


def _draw_leg(c: _Canvas, hip: tuple[float, float], foot: tuple[float, float], value: float) -> None:
    knee = ((hip[0] + foot[0]) / 2 + 0.07, (hip[1] + foot[1]) / 2 - 0.03)
    c.paint(c.capsule(hip, knee, 0.045) | c.capsule(knee, foot, 0.04), value)


def _draw_motorbike(c: _Canvas, look: dict, frame: int) -> None:
    A = c.aspect
    for x in (0.2, A - 0.2):
        _draw_wheel(c, x, 0.8, 0.19)
    c.paint(c.ellipse(A / 2, 0.58, 0.36 * A, 0.13), look["body"])
    c.paint(c.capsule((A - 0.2, 0.8), (0.78 * A, 0.38), 0.03), 0.2, 0.0)  # fork
    hip, shoulder = (0.42 * A, 0.45), (0.52 * A, 0.2)
    c.paint(c.capsule(hip, shoulder, 0.09), look["shirt"])
    c.paint(c.capsule(shoulder, (0.75 * A, 0.36), 0.035), look["shirt"] * 0.85)
    _draw_leg(c, hip, (0.5 * A, 0.72), look["pants"])
    c.paint(c.ellipse(shoulder[0] + 0.04, 0.1, 0.085), look["accent"])  # helmet


def _draw_wheelchair(c: _Canvas, look: dict, frame: int) -> None:
    A = c.aspect
    wx, wy, r = 0.36 * A, 0.72, 0.26
    c.paint(c.rect(0.25 * A, 0.5, 0.62 * A, 0.57), 0.15, 0.0)  # seat
    c.paint(c.capsule((0.25 * A, 0.2), (0.25 * A, 0.55), 0.02), 0.15, 0.0)  # back rest
    hip, shoulder = (0.33 * A, 0.5), (0.36 * A, 0.2)
    c.paint(c.capsule(hip, shoulder, 0.09), look["shirt"])
    c.paint(c.capsule(hip, (0.66 * A, 0.5), 0.06) | c.capsule((0.66 * A, 0.5), (0.7 * A, 0.86), 0.05), look["pants"])
    c.paint(c.ellipse(shoulder[0] + 0.03, 0.09, 0.07), look["skin"])
    c.paint(c.ring(wx, wy, r, r - 0.04), 0.08, 0.0)
    angle = frame * math.pi / 8
    for k in range(2):  # spokes turn as it rolls
        a = angle + k * math.pi / 2
        dx, dy = (r - 0.03) * math.cos(a), (r - 0.03) * math.sin(a)
        c.paint(c.capsule((wx - dx, wy - dy), (wx + dx, wy + dy), 0.012), 0.55, 0.0)
    c.paint(c.capsule(shoulder, (wx + 0.05, wy - 0.15), 0.03), look["shirt"] * 0.9)
    c.paint(c.ellipse(0.8 * A, 0.93, 0.06), 0.08, 0.0)  # castor


_DRAWERS: dict[str, Callable[[_Canvas, dict, int], None]] = {
    "pedestrian": _draw_pedestrian,
    "car": _draw_car,
    "bicycle": _draw_bicycle,
    "bus": _draw_bus,
    "motorbike": _draw_motorbike,
    "truck": _draw_truck,
    "tram": _draw_tram,
    "wheelchair": _draw_wheelchair,
}
