"""Weight schedules over training: constant, or linear or cosine from a start to an end value (DreamCS's alpha(t))."""

import dataclasses
import math

#----------------------------------------------------------------------------
# DreamCS ("Progressive Reward Guidance") weights its reward by alpha(t), scheduled from alpha_min to alpha_max over
# the optimisation, so that early steps explore and later ones follow the reward. A schedule here is that weight as a
# function of progress p in [0, 1] (the share of the training done):
#   constant   start throughout (end = start)
#   linear     start + (end - start) p                       (DreamCS's: "linearly scheduled")
#   cosine     end + (start - end) (1 + cos(pi p)) / 2       (flat at both ends; the halfway weight is linear's)

SCHEDULES = ('constant', 'linear', 'cosine')


@dataclasses.dataclass(frozen=True)
class Schedule:
    kind:   str = 'constant'    # One of SCHEDULES.
    start:  float = 1.0         # The weight at progress 0.
    end:    float = 1.0         # The weight at progress 1 (constant: must equal start).

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f'unknown schedule {self.kind!r}; use one of {", ".join(SCHEDULES)}')
        for name in ('start', 'end'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f'schedule {name}={value!r}: expected a finite number >= 0')
        if self.kind == 'constant' and self.start != self.end:
            raise ValueError(f'a constant schedule has one weight; got start {self.start} and end {self.end}')

    def at(self, progress):
        """The weight at progress (clipped to [0, 1])."""
        p = min(max(float(progress), 0.0), 1.0)
        if self.kind == 'linear':
            return self.start + (self.end - self.start) * p
        if self.kind == 'cosine':
            return self.end + (self.start - self.end) * (1 + math.cos(math.pi * p)) / 2
        return float(self.start)


class Progress:
    """Where a phase is in its training: the share of images from the first it saw (begin) to `end_nimg`. The begin
    is carried by state()/load_state() through an exact resume; a run resumed otherwise begins again where it resumes."""

    def __init__(self,
        end_nimg    = None,         # Images shown when training ends (EG3D's total_kimg * 1000); None = unknown.
    ):
        self.end_nimg, self.begin_nimg, self.cur_nimg = end_nimg, None, None

    def update(self, cur_nimg):
        """Note the images shown so far (the first call sets the begin)."""
        self.begin_nimg = cur_nimg if self.begin_nimg is None else self.begin_nimg
        self.cur_nimg = cur_nimg

    @property
    def share(self):
        """Progress in [0, 1]: 0 before any update, 1 once the end is reached (or when begin and end coincide)."""
        if self.cur_nimg is None or self.end_nimg is None:
            return 0.0
        span = self.end_nimg - self.begin_nimg
        return 1.0 if span <= 0 else min(max((self.cur_nimg - self.begin_nimg) / span, 0.0), 1.0)

    def state(self):
        return dict(begin_nimg=self.begin_nimg)

    def load_state(self, state):
        self.begin_nimg = state.get('begin_nimg')

#----------------------------------------------------------------------------
