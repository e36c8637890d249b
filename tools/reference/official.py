"""Runs the official model code itself, unchanged, to make test fixtures.

The official repositories are never committed: each fixture script takes the path of a local
git checkout (`git clone` of the official repository), imports its model module as it is, and
records the repository, file and commit in every fixture it writes. Nothing of the official
code is patched; two things around it are:

- spikingjelly's multi-step LIF nodes are constructed with `backend="torch"` (the official
  code asks for `"cupy"`, which needs CUDA; both backends compute the same recurrence);
- the values a test needs (every LIF layer's spikes, each unit's real-valued input and
  output) are read with forward hooks on the official modules, under their module names.
"""
import importlib.util
import os
import subprocess
import sys

import torch


def checkout_commit(path):
    """The commit a checkout is at (it must be a git work tree without local changes to
    tracked files, so the fixture says exactly which code made it)."""
    try:
        commit = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], check=True, capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", path, "status", "--porcelain", "--untracked-files=no"], check=True,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"{path}: not a git checkout of the official repository ({e})")
    if dirty:
        raise SystemExit(f"{path}: the checkout has local changes; fixtures come from the official code unchanged")
    return commit


def force_torch_lif_backend():
    """Makes spikingjelly's multi-step LIF nodes use the torch backend whatever backend the
    caller names (the cupy backend needs CUDA; both compute the same)."""
    from spikingjelly.clock_driven import neuron

    for name in ("MultiStepLIFNode", "MultiStepParametricLIFNode"):
        cls = getattr(neuron, name)
        if getattr(cls, "_backend_forced", False):
            continue
        original = cls.__init__

        def init(self, *args, _original=original, **kwargs):
            kwargs["backend"] = "torch"
            _original(self, *args, **kwargs)

        cls.__init__ = init
        cls._backend_forced = True
    return neuron.MultiStepLIFNode


def import_official(checkout, relpath, search_path=None):
    """Imports `checkout/relpath` as a module (its folder, or `search_path`, on sys.path for
    its own imports)."""
    path = os.path.join(checkout, relpath)
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: not found; is {checkout} a checkout of the right repository?")
    sys.path.insert(0, os.path.join(checkout, search_path) if search_path else os.path.dirname(path))
    name = "official_" + relpath.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # timm's register_model looks the module up
    spec.loader.exec_module(module)
    return module


def source(repo, checkout, relpath):
    """The metadata every fixture of this module carries."""
    return {"source_repo": repo, "source_file": relpath, "source_commit": checkout_commit(checkout)}


class _Seen(Exception):
    pass


def input_of(model, module, run):
    """The first input `module` gets in `run()` (a forward of `model`), stopping the forward
    there (calibration visits every BatchNorm in order: no need to finish each pass)."""
    seen = {}

    def hook(m, args):
        seen["x"] = args[0].detach().clone()
        raise _Seen

    h = module.register_forward_pre_hook(hook)
    try:
        run()
    except _Seen:
        pass
    finally:
        h.remove()
    if "x" not in seen:
        raise SystemExit(f"{type(module).__name__} never ran in the forward")
    return seen["x"]


class Recorder:
    """Forward hooks on the official modules: `spikes[name]` is the output of every LIF node,
    `inputs[unit]` / `outputs[unit]` the first input and the output of each named unit."""

    def __init__(self, model, lif_type, units=()):
        self.spikes, self.inputs, self.outputs = {}, {}, {}
        self.handles = []
        modules = dict(model.named_modules())
        for name, m in modules.items():
            if isinstance(m, lif_type):
                self.handles.append(m.register_forward_hook(self._store(self.spikes, name)))
        for unit in units:
            if unit not in modules:
                raise SystemExit(f"the official model has no module {unit!r}")
            m = modules[unit]
            self.handles.append(m.register_forward_pre_hook(
                lambda mod, args, unit=unit: self._put(self.inputs, unit, args[0])))
            self.handles.append(m.register_forward_hook(self._store(self.outputs, unit)))

    def _store(self, table, name):
        return lambda mod, args, out: self._put(table, name, out[0] if isinstance(out, tuple) else out)

    @staticmethod
    def _put(table, name, value):
        if name in table:
            raise SystemExit(f"{name} ran twice in one forward; the recorder expects one call")
        table[name] = value.detach().clone()

    def clear(self):
        self.spikes, self.inputs, self.outputs = {}, {}, {}

    def remove(self):
        for h in self.handles:
            h.remove()


def check_rates(name, spikes):
    """Every LIF layer fires at a rate strictly between 0 and 1."""
    rates = {k: v.float().mean().item() for k, v in spikes.items()}
    bad = {k: r for k, r in rates.items() if not 0.0 < r < 1.0}
    if bad:
        raise SystemExit(f"{name}: LIF layers that never or always fire: {bad}")
    return rates
