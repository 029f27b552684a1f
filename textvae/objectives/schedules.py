"""KL-weight schedules: pure functions of the training step."""

from __future__ import annotations

from collections.abc import Callable

from textvae.config import ScheduleConfig
from textvae.registry import Registry

Schedule = Callable[[int], float]
SCHEDULES: Registry[Callable[[ScheduleConfig, int, int], Schedule]] = Registry("KL schedule")
schedule = SCHEDULES.register


@schedule("constant")
def constant(cfg: ScheduleConfig, steps_per_epoch: int, epochs: int) -> Schedule:
    return lambda step: cfg.value


@schedule("linear")
def linear(cfg: ScheduleConfig, steps_per_epoch: int, epochs: int) -> Schedule:
    """He et al.: from `start` to `end` over `warmup_epochs`, increased every iteration, then flat."""
    warmup = max(1.0, cfg.warmup_epochs * steps_per_epoch)

    def weight(step: int) -> float:
        return cfg.start + (cfg.end - cfg.start) * min(1.0, step / warmup)

    return weight


@schedule("cyclical")
def cyclical(cfg: ScheduleConfig, steps_per_epoch: int, epochs: int) -> Schedule:
    """Fu et al. (2019): in each cycle rise linearly from `start` to `end` over `ratio` of it, then hold."""
    cycle_epochs = cfg.cycle_epochs or epochs / cfg.cycles
    period = max(1.0, cycle_epochs * steps_per_epoch)
    rise = period * cfg.ratio

    def weight(step: int) -> float:
        position = step % period
        return cfg.start + (cfg.end - cfg.start) * min(1.0, position / rise)

    return weight


def make_schedule(cfg: ScheduleConfig, steps_per_epoch: int, epochs: int) -> Schedule:
    return SCHEDULES[cfg.type](cfg, steps_per_epoch, epochs)
