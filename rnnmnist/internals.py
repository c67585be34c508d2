"""The speed opt-ins that reach into torch's or CPython's private parts, each used only on the version it was
written for.

Three shortcuts rely on internals no release promises to keep: ending the process without the
interpreter's teardown (``atexit._run_exitfuncs`` then ``os._exit``), building and saving torch's optimizers
without importing ``torch._dynamo`` (``__dynamo_disable`` set on their wrapped methods), and stepping them
past the wrappers that import it (their step-hook dictionaries read every step, their own ``step`` under
the wrappers). :data:`WRITTEN_FOR` says which torch or CPython ``major.minor`` each was written and
checked for. On any other version, or when an attribute it uses is missing, each takes the plain path
instead (``sys.exit``'s ordinary teardown, torch's methods left as they are, ``optimizer.step()``): slower,
never wrong. The environment variable ``RNNMNIST_INTERNALS_VERSIONS`` (e.g. ``torch=2.99,python=3.99``)
makes the guards see other versions, so that the plain paths are tested for real.

The functions that change something for the whole process (:func:`defer_dynamo_import`,
:func:`exit_without_teardown`) are opt-ins of the command line's entry point; library code only steps.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from rnnmnist.errors import RnnmnistError

if TYPE_CHECKING:
    import torch

# Each shortcut -> (the runtime whose internals it uses, the major.minor it was written and checked for).
WRITTEN_FOR: dict[str, tuple[str, str]] = {
    "exit_without_teardown": ("python", "3.11"),  # atexit._run_exitfuncs, os._exit
    "defer_dynamo_import": ("torch", "2.14"),  # Optimizer.<method>.__wrapped__.__dynamo_disable
    "optimizer_step": ("torch", "2.14"),  # the step-hook dicts, Optimizer.step's __wrapped__ chain
}
VERSIONS_ENV = "RNNMNIST_INTERNALS_VERSIONS"  # "torch=2.99,python=3.99": what the guards see instead (tests)

# torch wraps these Optimizer methods so that torch.compile leaves them alone; the wrapper imports dynamo.
_DYNAMO_WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
_STEP_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")  # on each optimizer
_GLOBAL_STEP_HOOKS = ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")  # in torch.optim.optimizer


def applies(name: str) -> bool:
    """Whether the shortcut ``name`` (a key of :data:`WRITTEN_FOR`) runs here: the running (or assumed)
    version of its runtime is the one it was written for."""
    return _applies(name, os.environ.get(VERSIONS_ENV, ""))


@functools.cache
def _applies(name: str, assumed: str) -> bool:
    runtime, written_for = WRITTEN_FOR[name]
    seen = dict(item.strip().split("=", 1) for item in assumed.split(",") if "=" in item)
    return seen.get(runtime, _running(runtime)) == written_for


@functools.cache
def _running(runtime: str) -> str:
    """The ``major.minor`` of ``python`` or of ``torch`` (imported by then: only torch's shortcuts ask)."""
    if runtime == "python":
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    import torch

    return ".".join(str(torch.__version__).split("+")[0].split(".")[:2])


def exit_without_teardown(code: int | str | None) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, but skip the interpreter's teardown.

    Once torch is loaded, tearing the interpreter down (freeing every module, running
    C++ static destructors) takes ~0.4 s after the command has finished and said all it
    had to say (bench/run.py's phases section: 0.37-0.41 s of a 4-second training run).
    Exit handlers still run (multiprocessing's, tempfile's, logging's) and the standard
    streams are flushed first. While other Python threads are alive, torch was never
    loaded (nothing to gain), or this is not the CPython it was written for, the ordinary exit happens instead.
    """
    plain = "torch" not in sys.modules or threading.active_count() > 1 or not applies("exit_without_teardown")
    if plain or not (hasattr(atexit, "_run_exitfuncs") and hasattr(os, "_exit")):
        raise SystemExit(code)
    atexit._run_exitfuncs()
    status = code if isinstance(code, int) else 0 if code is None else 1
    if isinstance(code, str):
        print(code, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, RnnmnistError):  # a stdout that failed was reported already
            status = status or 1
    os._exit(status)


def defer_dynamo_import() -> None:
    """Let torch's optimizers be built, zeroed and saved without importing ``torch._dynamo`` (~1 s).

    Their methods are wrapped to be left alone by ``torch.compile``, and the wrapper
    imports ``torch._dynamo`` on first use (it caches what to call as ``__dynamo_disable``
    on the wrapped function). While ``torch._dynamo`` is not imported nothing is being
    compiled, so the cached call is the plain function until then and dynamo's own after.
    Touches torch's functions for the whole process, hence an opt-in of the command line.
    """
    if "torch._dynamo" in sys.modules or not applies("defer_dynamo_import"):
        return
    import torch

    for name in _DYNAMO_WRAPPED:
        plain = getattr(getattr(torch.optim.Optimizer, name, None), "__wrapped__", None)
        if plain is not None and getattr(plain, "__dynamo_disable", None) is None:
            plain.__dynamo_disable = _disabled_once_dynamo_is_imported(plain)


def _disabled_once_dynamo_is_imported(plain: Any) -> Any:
    disabled = None

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal disabled
        if "torch._dynamo" not in sys.modules:
            return plain(*args, **kwargs)
        if disabled is None:
            import torch._dynamo

            disabled = torch._dynamo.disable(plain, recursive=True, wrapping=False)
        return disabled(*args, **kwargs)

    return call


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, without the wrappers that import ``torch._dynamo`` while it is not imported.

    The wrappers (step hooks, profiler label, grad mode, dynamo graph breaks) are kept
    whenever they could matter: dynamo imported, hooks registered, a differentiable optimizer,
    or a torch whose optimizers this was not written for.
    """
    if not _wrappers_idle(optimizer):
        optimizer.step()
        return
    import torch

    with torch.no_grad():  # what the grad-mode wrapper sets for a non-differentiable optimizer
        _own_step(type(optimizer))(optimizer)


def _wrappers_idle(optimizer: torch.optim.Optimizer) -> bool:
    """Nothing the step wrappers do would matter for this step (checked every step: hooks come and go)."""
    if "torch._dynamo" in sys.modules or not applies("optimizer_step"):
        return False
    from torch.optim import optimizer as torch_optimizer

    try:
        hooks = [getattr(optimizer, n) for n in _STEP_HOOKS] + [getattr(torch_optimizer, n) for n in _GLOBAL_STEP_HOOKS]
    except AttributeError:  # not where the torch it was written for keeps them
        return False
    return not any(hooks) and not optimizer.defaults.get("differentiable")


@functools.cache
def _own_step(cls: type) -> Callable[[torch.optim.Optimizer], object]:
    """The class's own ``step``, under torch's wrappers (looked up once per class, not every step)."""
    return inspect.unwrap(cls.step)
