"""The traffic simulation (20 ms steps from ``warmup_s`` before the recording): vehicles queue and yield at the
crossing, pedestrians wait, cross and pause, cars park and leave. ``_TrafficSim(...).run()`` gives every object's
track; ``_place`` says where a track is drawn at any set of times."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .config import _KINDS, _SIDEWALK_MIX, SynthConfig, _KindSpec
from .scene import (
    _CENTRE_LINE,
    _CROSSWALK_HALF_WIDTH,
    _FAR_CURB,
    _FAR_SIDEWALK,
    _NEAR_CURB,
    _NEAR_SIDEWALK,
    _NO_PARKING_HALF_WIDTH,
    _STOP_LINE_OFFSET,
    _Ground,
    _Lane,
    _make_lanes,
)
from .sprites import _make_look

_SIM_DT_S = 0.02


@dataclass
class _Agent:
    """One traffic participant while the simulation runs; its history becomes a :class:`_Track`."""

    id: int
    kind: str
    length_m: float
    height_m: float
    cruise_mps: float
    x: float
    z: float
    facing: int
    look_seed: int
    lane: _Lane | None = None
    plan: list = field(default_factory=list)  # walkers: steps still to do
    v: float = 0.0
    dist: float = 0.0
    parked: bool = False
    depart_at_s: float = math.inf
    stop_x: float | None = None  # a lane agent halts with its front at this X ...
    stop_for_s: float = 0.0  # ... for this long
    stopped_s: float = 0.0
    ready_s: float = 0.0  # how long a stopped lane agent has had room to go (reaction time)
    reaction_s: float = 0.8
    crossing_half: int | None = None
    wait_s: float = 0.0
    done: bool = False
    first_step: int = 0
    history: list = field(default_factory=list)

    @property
    def spec(self) -> _KindSpec:
        return _KINDS[self.kind]


@dataclass
class _Track:
    """An object's trajectory sampled at the simulation steps ``first_step ... first_step + len - 1``."""

    id: int
    kind: str
    length_m: float
    height_m: float
    look: dict
    first_step: int
    x: np.ndarray
    z: np.ndarray
    v: np.ndarray
    dist: np.ndarray
    facing: np.ndarray

    @property
    def spec(self) -> _KindSpec:
        return _KINDS[self.kind]


class _TrafficSim:
    """A small traffic simulation on the road layout; deterministic given its generator."""

    def __init__(self, cfg: SynthConfig, ground: _Ground, crosswalk_x: float, rng: np.random.Generator):
        self.cfg, self.ground, self.crosswalk_x, self.rng = cfg, ground, crosswalk_x, rng
        self.lanes = _make_lanes(cfg.density)
        self.walkers: list[_Agent] = []
        self.finished: list[_Agent] = []
        self.next_id = 1
        self.step = 0
        self.t0_s = -cfg.warmup_s
        self.n_steps = int(math.ceil((cfg.duration_s + cfg.warmup_s) / _SIM_DT_S)) + 2

    # -- spawning ------------------------------------------------------------------------------------------------------

    def _new_agent(self, kind: str, x: float, z: float, facing: int, **kw) -> _Agent:
        spec, rng = _KINDS[kind], self.rng
        height = rng.uniform(*spec.height_m)
        length = height * rng.uniform(0.36, 0.42) if kind == "pedestrian" else rng.uniform(*spec.length_m)
        agent = _Agent(
            self.next_id,
            kind,
            length,
            height,
            rng.uniform(*spec.speed_mps),
            x,
            z,
            facing,
            int(rng.integers(2**31)),
            first_step=self.step,
            reaction_s=rng.uniform(0.5, 1.2),
            **kw,
        )
        self.next_id += 1
        return agent

    def _choose(self, mix: tuple[tuple[str, float], ...]) -> str:
        names, weights = zip(*mix)
        return names[int(self.rng.choice(len(names), p=np.array(weights) / sum(weights)))]

    def _maybe_random_stop(self, a: _Agent, lane: _Lane) -> None:
        """With probability ``stop_prob``, make a lane agent halt once, somewhere ahead of it in view and away from
        the crossing (queues then form behind it)."""
        if self.rng.random() >= self.cfg.stop_prob:
            return
        x0, x1 = self.ground.visible_x(lane.z)
        span = x1 - x0
        front = lane.direction * a.x + a.length_m / 2
        for _ in range(10):
            xs = float(self.rng.uniform(x0 + 0.15 * span, x1 - 0.15 * span))
            if abs(xs - self.crosswalk_x) > 7.0 and lane.direction * xs > front + 2.0:
                a.stop_x = xs
                a.stop_for_s = float(self.rng.uniform(*self.cfg.stop_duration_s))
                return

    def _spawn_in_lane(self, lane: _Lane, x: float, v: float | None = None) -> _Agent:
        a = self._new_agent(self._choose(lane.mix), x, lane.z + self.rng.uniform(-0.3, 0.3), lane.direction, lane=lane)
        a.v = a.cruise_mps if v is None else v
        lane.agents.append(a)
        return a

    def _lane_entry_x(self, lane: _Lane, length: float) -> float:
        x0, x1 = self.ground.visible_x(lane.z)
        return x0 - length / 2 - 1.0 if lane.direction > 0 else x1 + length / 2 + 1.0

    def _arrive_lane(self, lane: _Lane) -> None:
        a = self._spawn_in_lane(lane, 0.0)
        a.x = self._lane_entry_x(lane, a.length_m)
        others = [b for b in lane.agents if b is not a]
        if others:  # keep the entry clear: drop the arrival when the last vehicle is still at the edge
            rear = min(others, key=lambda b: lane.direction * b.x)
            gap = lane.direction * (rear.x - a.x) - (rear.length_m + a.length_m) / 2
            if gap < a.spec.min_gap_m + 4.0:
                lane.agents.remove(a)
                return
            a.v = min(a.v, rear.v + math.sqrt(2 * a.spec.decel * max(gap - a.spec.min_gap_m, 0.0)))
        self._maybe_random_stop(a, lane)

    def _populate(self) -> None:
        """Initial scene at the start of the warm-up: moving traffic spread along each lane, parked cars, people."""
        rng, cfg = self.rng, self.cfg
        for lane in self.lanes:
            x0, x1 = self.ground.visible_x(lane.z)
            if lane.parking:
                self._park_cars(lane, x0, x1)
                continue
            n = rng.poisson(lane.rate_hz * (x1 - x0) / 10.0)
            for x in np.sort(rng.uniform(x0, x1, n)):
                a = self._spawn_in_lane(lane, float(x))
                if any(abs(b.x - a.x) < (a.length_m + b.length_m) / 2 + 3 for b in lane.agents if b is not a):
                    lane.agents.remove(a)
                else:
                    self._maybe_random_stop(a, lane)
        for side in (0, 1):
            x0, x1 = self.ground.visible_x(np.mean(_NEAR_SIDEWALK) if side == 0 else np.mean(_FAR_SIDEWALK))
            for _ in range(rng.poisson(cfg.density * (x1 - x0) / 12.0)):
                self._spawn_walker(side, x=float(rng.uniform(x0, x1)))
            for _ in range(rng.poisson(1.2 * cfg.density * cfg.static_objects)):
                self._spawn_stander(side, float(rng.uniform(x0 + 2, x1 - 2)))

    def _park_cars(self, lane: _Lane, x0: float, x1: float) -> None:
        rng, cfg = self.rng, self.cfg
        x = x0 + rng.uniform(-3, 2)
        while x < x1 + 3:
            kind = self._choose(lane.mix)
            length = rng.uniform(*_KINDS[kind].length_m)
            clear = abs(x + length / 2 - self.crosswalk_x) > _NO_PARKING_HALF_WIDTH + length / 2
            if clear and rng.random() < 0.45 * cfg.static_objects:
                a = self._new_agent(kind, x + length / 2, lane.z, +1, lane=lane, parked=True)
                a.length_m = length
                a.cruise_mps = rng.uniform(4.0, 7.0)
                if rng.random() < 0.4:
                    a.depart_at_s = rng.uniform(self.t0_s, cfg.duration_s + 10)
                lane.agents.append(a)
                x += length + rng.uniform(1.0, 2.5)
            else:
                x += rng.uniform(4.0, 8.0)

    def _arrive_parker(self, lane: _Lane) -> None:
        """A car that drives into the parking lane and parks behind the last parked car (stationary for long)."""
        x0, x1 = self.ground.visible_x(lane.z)
        limit = self.crosswalk_x - _NO_PARKING_HALF_WIDTH
        parked_left = [b.x - b.length_m / 2 for b in lane.agents if b.x < self.crosswalk_x]
        if parked_left:
            limit = min(limit, min(parked_left))
        a = self._spawn_in_lane(lane, 0.0)
        a.x = self._lane_entry_x(lane, a.length_m)
        a.cruise_mps = self.rng.uniform(4.0, 7.0)
        a.v = a.cruise_mps
        lo, hi = x0 + a.length_m + 2, limit - 1.5
        if hi <= lo or any(lane.direction * (b.x - a.x) < a.length_m + 6 for b in lane.agents if b is not a):
            lane.agents.remove(a)
            return
        a.stop_x = self.rng.uniform(lo, hi)
        a.stop_for_s = self.rng.uniform(8.0, 60.0)

    def _spawn_walker(self, side: int, x: float | None = None) -> None:
        """A pedestrian (or wheelchair) walking along a sidewalk; some cross the road, some pause on the way."""
        rng = self.rng
        kind = self._choose(_SIDEWALK_MIX)
        z = self._sidewalk_z(side)
        facing = 1 if rng.random() < 0.5 else -1
        x0, x1 = self.ground.visible_x(z)
        if x is None:
            x = x0 - 1.0 if facing > 0 else x1 + 1.0
        a = self._new_agent(kind, x, z, facing)
        a.v = a.cruise_mps
        plan: list = []
        ahead = lambda xx: facing * (xx - x) > 0
        if rng.random() < 0.3 and ahead(self.crosswalk_x):
            xc = self.crosswalk_x + rng.uniform(-1.5, 1.5)
            plan += self._crossing_plan(side, xc, z)
        elif rng.random() < self.cfg.stop_prob:
            xp = rng.uniform(x0 + 2, x1 - 2)
            if ahead(xp):
                plan += [("walk_to", xp, z), ("wait", rng.uniform(*self.cfg.stop_duration_s))]
        plan.append(("exit",))
        a.plan = plan
        self.walkers.append(a)

    def _crossing_plan(self, side: int, xc: float, z_from: float) -> list:
        rng = self.rng
        kerb_from, kerb_to = (_NEAR_CURB - 0.1, _FAR_CURB + 0.1) if side == 0 else (_FAR_CURB + 0.1, _NEAR_CURB - 0.1)
        first, second = (0, 1) if side == 0 else (1, 0)
        z_after = self._sidewalk_z(1 - side)
        return [
            ("walk_to", xc, z_from),
            ("walk_to", xc, kerb_from),
            ("cross_wait", first),
            ("cross", xc, _CENTRE_LINE, first),
            ("cross_wait", second),
            ("cross", xc, kerb_to, second),
            ("walk_to", xc + rng.uniform(-1, 1), z_after),
            ("face", 1 if rng.random() < 0.5 else -1),
        ]

    def _spawn_stander(self, side: int, x: float) -> None:
        """Somebody standing still for a long time (waiting, talking), then walking away."""
        z = self._sidewalk_z(side)
        a = self._new_agent("pedestrian", x, z, 1 if self.rng.random() < 0.5 else -1)
        a.plan = [("wait", self.rng.uniform(self.cfg.warmup_s + 1, self.cfg.warmup_s + 40)), ("exit",)]
        self.walkers.append(a)

    def _sidewalk_z(self, side: int) -> float:
        if side == 0:
            return float(self.rng.uniform(_NEAR_SIDEWALK[0] + 0.3, _NEAR_CURB - 0.3))
        return float(self.rng.uniform(_FAR_CURB + 0.3, _FAR_SIDEWALK[1] - 0.3))

    # -- crossing rules ------------------------------------------------------------------------------------------------

    def _stop_line_x(self, lane: _Lane) -> float:
        return self.crosswalk_x - lane.direction * _STOP_LINE_OFFSET

    def _half_blocked(self, half: int) -> bool:
        return any(w.crossing_half == half for w in self.walkers)

    def _half_safe_to_enter(self, half: int) -> bool:
        """A pedestrian may step onto this half of the crossing: no vehicle is in it or too close to stop."""
        for lane in self.lanes:
            if lane.half != half:
                continue
            d, line = lane.direction, self._stop_line_x(lane)
            far_edge = d * (self.crosswalk_x + d * (_CROSSWALK_HALF_WIDTH + 0.5))
            for a in lane.agents:
                front, rear = d * a.x + a.length_m / 2, d * a.x - a.length_m / 2
                if front > d * line and rear < far_edge:
                    return False
                gap = d * line - front
                if 0 < gap and a.v * a.v / (2 * gap) > 0.7 * a.spec.decel:
                    return False
        return True

    # -- dynamics ------------------------------------------------------------------------------------------------------

    def _update_lane(self, lane: _Lane, t_s: float) -> None:
        d, dt = lane.direction, _SIM_DT_S
        blocked = self._half_blocked(lane.half)
        line = d * self._stop_line_x(lane)
        leader: _Agent | None = None
        for a in sorted(lane.agents, key=lambda b: -d * b.x):
            spec = a.spec
            front = d * a.x + a.length_m / 2
            if a.parked and t_s >= a.depart_at_s and leader is None:
                a.parked = False
            v_cap = 0.0 if a.parked else a.cruise_mps
            room = math.inf  # distance the front may still advance this step
            if leader is not None:
                gap = (d * leader.x - leader.length_m / 2) - front - spec.min_gap_m
                v_cap = min(v_cap, _safe_speed(gap, leader.v, spec.decel))
                room = min(room, max(gap, 0.0) + leader.v * dt)
            if a.stop_x is not None:
                gap = d * a.stop_x - front
                if gap < 0.05 and a.v < 0.01:
                    a.stopped_s += dt
                    if a.stopped_s >= a.stop_for_s:
                        a.stop_x = None
                elif gap > -0.5:
                    v_cap = min(v_cap, _safe_speed(gap, 0.0, spec.decel))
                    room = min(room, max(gap, 0.0))
            if blocked:
                gap = line - front
                if gap > -0.01 and not (gap > 0 and a.v * a.v / (2 * gap) > 1.5 * spec.decel):
                    v_cap = min(v_cap, _safe_speed(gap, 0.0, spec.decel))
                    room = min(room, max(gap, 0.0))
            if a.v < 0.01:  # queued vehicles start one after another, each after a reaction time
                a.ready_s = a.ready_s + dt if v_cap > 0.5 else 0.0
                if a.ready_s < a.reaction_s:
                    v_cap = 0.0
            v_new = max(0.0, min(a.v + spec.accel * dt, v_cap))
            if v_new < 0.02 and v_cap < 0.05:
                v_new = 0.0
            step = min(0.5 * (a.v + v_new) * dt, room)
            a.x += d * step
            a.dist += step
            a.v = v_new
            leader = a
        x0, x1 = self.ground.visible_x(lane.z)
        for a in list(lane.agents):
            if (d > 0 and a.x - a.length_m / 2 > x1 + 2) or (d < 0 and a.x + a.length_m / 2 < x0 - 2):
                lane.agents.remove(a)
                self.finished.append(a)

    def _update_walker(self, a: _Agent) -> None:
        dt = _SIM_DT_S
        while a.plan:
            step = a.plan[0]
            kind = step[0]
            if kind == "wait":
                a.v = 0.0
                a.wait_s += dt
                if a.wait_s >= step[1]:
                    a.wait_s = 0.0
                    a.plan.pop(0)
                return
            if kind == "face":
                a.facing = step[1]
                a.plan[0] = ("exit",)
                continue
            if kind == "cross_wait":
                if self._half_safe_to_enter(step[1]):
                    a.crossing_half = step[1]
                    a.plan.pop(0)
                    continue
                a.v = 0.0
                return
            if kind == "exit":
                x0, x1 = self.ground.visible_x(a.z)
                target = (x1 + a.length_m + 1.0) if a.facing > 0 else (x0 - a.length_m - 1.0)
                if self._walk_towards(a, target, a.z, dt):
                    a.done = True
                return
            # walk_to / cross
            if self._walk_towards(a, step[1], step[2], dt):
                if kind == "cross":
                    a.crossing_half = None
                a.plan.pop(0)
            return
        a.done = True

    def _walk_towards(self, a: _Agent, tx: float, tz: float, dt: float) -> bool:
        """Move a walker towards a ground point; True once it is there."""
        dx, dz = tx - a.x, tz - a.z
        dist = math.hypot(dx, dz)
        a.v = min(a.cruise_mps, a.v + a.spec.accel * dt)
        step = a.v * dt
        if abs(dx) > 0.05:
            a.facing = 1 if dx > 0 else -1
        if dist <= step:
            a.x, a.z = tx, tz
            a.dist += dist
            return True
        a.x += dx / dist * step
        a.z += dz / dist * step
        a.dist += step
        return False

    def _arrivals(self) -> None:
        rng, dt, cfg = self.rng, _SIM_DT_S, self.cfg
        for lane in self.lanes:
            if lane.parking:
                if rng.random() < 0.015 * cfg.density * dt:
                    self._arrive_parker(lane)
            elif rng.random() < lane.rate_hz * dt:
                self._arrive_lane(lane)
        for side in (0, 1):
            if rng.random() < 0.12 * cfg.density * dt:
                self._spawn_walker(side)

    def _record(self, a: _Agent) -> None:
        a.history.append((a.x, a.z, a.v, a.dist, a.facing))

    def run(self) -> list[_Track]:
        """Simulate from ``-warmup_s`` to the end of the recording; returns every object's trajectory."""
        self._populate()
        for self.step in range(self.n_steps):  # noqa: B020  (the step is state the update methods read)
            t_s = self.t0_s + self.step * _SIM_DT_S
            if self.step:
                self._arrivals()
                for w in self.walkers:
                    self._update_walker(w)
                for lane in self.lanes:
                    self._update_lane(lane, t_s)
                for w in [w for w in self.walkers if w.done]:
                    self.walkers.remove(w)
                    self.finished.append(w)
            for lane in self.lanes:
                for a in lane.agents:
                    if not a.history:
                        a.first_step = self.step
                    self._record(a)
            for w in self.walkers:
                if not w.history:
                    w.first_step = self.step
                self._record(w)
        everyone = self.finished + [a for lane in self.lanes for a in lane.agents] + self.walkers
        return [self._to_track(a) for a in sorted(everyone, key=lambda a: a.id) if a.history]

    def _to_track(self, a: _Agent) -> _Track:
        h = np.array(a.history, dtype=np.float64)
        return _Track(
            a.id,
            a.kind,
            a.length_m,
            a.height_m,
            _make_look(a.kind, np.random.default_rng(a.look_seed)),
            a.first_step,
            h[:, 0],
            h[:, 1],
            h[:, 2],
            h[:, 3],
            h[:, 4].astype(np.int8),
        )


def _safe_speed(gap: float, v_obstacle: float, decel: float) -> float:
    """Highest speed from which braking at ``decel`` stops (or matches ``v_obstacle``) within ``gap``."""
    return math.sqrt(max(0.0, v_obstacle * v_obstacle + 2.0 * decel * max(gap, 0.0)))


# ----------------------------------------------------------------------------------------------------------------------
# Where each object is drawn, at any set of times
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class _Placement:
    """Per-time image placement of one track (arrays over the queried times)."""

    present: np.ndarray  # bool
    left: np.ndarray  # float, sprite top-left in pixels
    top: np.ndarray
    w: np.ndarray  # int sprite size
    h: np.ndarray
    frame: np.ndarray  # int animation frame
    facing: np.ndarray  # int8
    ground_row: np.ndarray  # depth order: larger is nearer
    speed: np.ndarray  # m/s


def _place(track: _Track, ground: _Ground, t_us: np.ndarray, sim_t0_us: int) -> _Placement:
    sim_dt_us = _SIM_DT_S * 1e6
    pos = (t_us - sim_t0_us) / sim_dt_us - track.first_step
    n = len(track.x)
    present = (pos >= 0) & (pos <= n - 1)
    p = np.clip(pos, 0, n - 1)
    i0 = np.minimum(np.floor(p).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    f = p - i0

    def lerp(a: np.ndarray) -> np.ndarray:
        return a[i0] * (1 - f) + a[i1] * f

    x, z, dist = lerp(track.x), lerp(track.z), lerp(track.dist)
    row = ground.row_at_depth(z)
    ppm = ground.ppm_at_row(row)
    w = np.maximum(1, np.rint(track.length_m * ppm)).astype(np.int64)
    h = np.maximum(1, np.rint(track.height_m * ppm)).astype(np.int64)
    spec = track.spec
    frame = np.floor(dist / spec.stride_m * spec.frames).astype(np.int64) % spec.frames
    facing = np.where(f < 0.5, track.facing[i0], track.facing[i1])
    speed = np.where(f > 0, track.v[i1], track.v[i0])  # the speed over the simulation step containing t
    return _Placement(present, ground.cx + x * ppm - w / 2.0, row - h, w, h, frame, facing, row, speed)
