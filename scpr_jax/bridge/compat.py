"""Workarounds for the real simulators on Python 3.11 / MuJoCo 4 (the project's only ones).

1. Import. safety-gymnasium 1.0.0 (its only release) declares dataclass fields with NumPy arrays
as defaults (``color: np.array = COLOR['apple']``). Python 3.11 rejects any unhashable
default (``ValueError: mutable default <class 'numpy.ndarray'> for field color is not
allowed``), so ``import safety_gymnasium`` fails before any environment exists.

What: while (and only while) `import_safety_gymnasium` imports the package, the stdlib's
per-field hook ``dataclasses._get_field`` is wrapped so that, for classes defined in
``safety_gymnasium`` modules only, an ndarray default becomes
``field(default_factory=<copy of the array>)``. Each instance gets its own copy (Python
3.10 shared one array between instances; nothing in the velocity tasks mutates it). The
original hook is restored in a ``finally``, so dataclasses behave normally afterwards and
no other package is affected.

2. Swimmer model. Gymnasium 0.28.1's ``swimmer.xml`` (used by SafetySwimmerVelocity) sets
``<option collision="predefined">``, an attribute MuJoCo 3+ removed (``XML Error: Schema
violation: unrecognized attribute: 'collision'``). "predefined" meant "only explicit
``<contact><pair>`` contacts" and the model has none, so `SwimmerFix` loads the same XML with
that attribute replaced by ``<flag contact="disable"/>`` (no contacts either way). It is a
subclass that overrides only the model loading; the file on disk is not touched.

3. Bullet-Safety-Gym's output silencer. Its ``RedirectStream`` (run when its builder module
is imported and when an environment connects to PyBullet) flushes the C stream whose libc
symbol is named after ``sys.stdout.name`` / ``sys.stderr.name``. When Python's streams are
not the process's own (pytest's output capture, notebooks) that lookup raises
``ValueError: ... undefined symbol``. `process_std_streams` points ``sys.stdout`` /
``sys.stderr`` at ``sys.__stdout__`` / ``sys.__stderr__`` (the same file descriptors) while
a Bullet environment is built, and restores them afterwards.

Remove each piece once its package ships a fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import re
import sys
from types import ModuleType

import numpy as np

PACKAGE = "safety_gymnasium"


def _array_factory(default: np.ndarray):
    def copy() -> np.ndarray:
        return default.copy()

    return copy


@contextlib.contextmanager
def ndarray_defaults_as_factories(prefix: str = PACKAGE):
    """While active, ndarray defaults of dataclasses from ``prefix`` modules become factories.

    Wraps ``dataclasses._get_field`` (called once per field by ``@dataclass``) and restores
    the original on exit, even if the body raises.
    """
    original = getattr(dataclasses, "_get_field", None)
    if original is None:
        raise ImportError(
            f"dataclasses._get_field is missing on Python {sys.version.split()[0]}; "
            "scpr_jax.bridge.compat needs updating for this Python version"
        )

    def get_field(cls, a_name, *args, **kwargs):
        default = cls.__dict__.get(a_name)
        if cls.__module__.startswith(prefix) and isinstance(default, np.ndarray):
            setattr(cls, a_name, dataclasses.field(default_factory=_array_factory(default)))
        return original(cls, a_name, *args, **kwargs)

    dataclasses._get_field = get_field
    try:
        yield
    finally:
        dataclasses._get_field = original


def import_safety_gymnasium() -> ModuleType:
    """``import safety_gymnasium`` under `ndarray_defaults_as_factories`."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    try:
        with ndarray_defaults_as_factories():
            return importlib.import_module(PACKAGE)
    except ModuleNotFoundError as e:
        if e.name != PACKAGE:
            raise
        raise ImportError(
            "safety_gymnasium is not installed; install it without its (unsatisfiable) pins: "
            "pip install --no-deps safety-gymnasium==1.0.0"
        ) from e


_PREDEFINED = re.compile(r'<option collision="predefined"([^>]*)/>')


def swimmer_xml(xml: str) -> str:
    """Gymnasium's swimmer XML with ``collision="predefined"`` replaced by disabled contacts."""
    fixed, n = _PREDEFINED.subn(r'<option\1><flag contact="disable"/></option>', xml)
    if n != 1:
        raise ValueError('expected one <option collision="predefined" .../> in the swimmer XML')
    return fixed


@functools.cache
def swimmer_velocity_env_class() -> type:
    """SafetySwimmerVelocity-v1's env class, loading its model through `swimmer_xml`."""
    import mujoco  # the real simulators' MuJoCo: optional, loaded only when one is built

    import_safety_gymnasium()
    module = importlib.import_module(f"{PACKAGE}.tasks.safe_velocity.safety_swimmer_velocity_v1")

    class SwimmerFix(module.SafetySwimmerVelocityEnv):
        def _initialize_simulation(self):
            # same steps as gymnasium's MujocoEnv._initialize_simulation, from the fixed XML
            with open(self.fullpath) as f:
                self.model = mujoco.MjModel.from_xml_string(swimmer_xml(f.read()))
            self.model.vis.global_.offwidth = self.width
            self.model.vis.global_.offheight = self.height
            self.data = mujoco.MjData(self.model)

    return SwimmerFix


@contextlib.contextmanager
def process_std_streams():
    """While active, ``sys.stdout`` / ``sys.stderr`` are the interpreter's original streams."""
    saved = sys.stdout, sys.stderr
    if sys.__stdout__ is not None and sys.__stderr__ is not None:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
