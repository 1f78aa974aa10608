"""Checks of what a script passes to a pipeline, so that a wrong value or type is refused where it
is given, in terms of what to pass, rather than failing deep inside a network or an image
library. The command line checks its options itself, with the same bounds."""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np

from i2icli.formats import SEED_MAX
from i2icli.imageio import Picture

# How to make a Picture, for a TypeError that says what to pass instead.
_MAKING_A_PICTURE = "read a file with read_image(path) or wrap an RGB array with Picture(array)"


def check_picture(value: Any, call: str, role: str | None = None, *, optional: bool = False) -> None:
    """TypeError unless ``value`` is a Picture (or, with ``optional``, None): a path or an array
    passed instead would otherwise end in an AttributeError from deep inside ``call``. ``role``
    names the argument where the call takes more than one picture."""
    if isinstance(value, Picture) or (optional and value is None):
        return
    what = f"the {role} as a Picture" if role else "a Picture"
    raise TypeError(f"{call} takes {what}, not {kind_of(value)}; {_MAKING_A_PICTURE}")


def check_flag(name: str, value: Any) -> None:
    """TypeError unless ``value`` is a bool: a string such as "no" would be taken as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")


def kind_of(value: Any) -> str:
    """What a wrong argument is, in a user's words: a path, a NumPy array, a list."""
    if isinstance(value, (str, bytes, os.PathLike)):
        return "a path"
    if isinstance(value, np.ndarray):
        return "a NumPy array"
    return f"a {type(value).__name__}"


def is_whole(value: Any) -> bool:
    """An integer (Python's or NumPy's), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_whole(name: str, value: Any, least: int, meaning: str = "") -> None:
    """ValueError unless ``value`` is an integer of at least ``least``."""
    if not is_whole(value) or value < least:
        raise ValueError(f"{name} must be a whole number of at least {least}{meaning}; got {value!r}")


def is_number(value: Any) -> bool:
    """A real number (Python's or NumPy's), not a bool: True passed for a number is a mistake, not 1."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_between(name: str, value: Any, least: float, most: float) -> None:
    """ValueError unless ``value`` is a number from ``least`` to ``most`` (NaN is not)."""
    if not is_number(value) or not least <= value <= most:
        raise ValueError(f"{name} must be a number from {least:g} to {most:g}; got {value!r}")


def check_fraction(name: str, value: Any) -> None:
    """ValueError unless ``value`` is a number from 0 to 1 (NaN is not)."""
    check_between(name, value, 0, 1)


def check_not_negative(name: str, value: Any) -> None:
    """ValueError unless ``value`` is a finite number of at least 0."""
    if not is_number(value) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number of at least 0; got {value!r}")


def check_seed(value: Any, name: str = "seed", *, count: int = 1) -> None:
    """ValueError unless ``value`` (and the ``count`` - 1 seeds after it) are seeds, 0 to SEED_MAX.
    A negative seed is refused rather than taken as another one (Python's random takes -5 as 5)."""
    if not is_whole(value) or value < 0:
        raise ValueError(f"{name} must be a whole number of at least 0; got {value!r}")
    if value + count - 1 > SEED_MAX:
        last = SEED_MAX - count + 1
        raise ValueError(f"{name} must be at most {last}" + (f" for {count} samples" if count > 1 else "")
                         + f"; got {value}")
