"""Module and Parameter: containers of trainable tensors, as in ``torch.nn``.

Layer (docs/architecture.md): ``nn``, above ``functional``. Attributes that are Parameters, Modules
or registered buffers are found by name, which gives ``named_parameters()``, ``state_dict()`` and
``to(backend, dtype)`` without any per-layer code.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..backends import get_backend
from ..tensor import Tensor, as_dtype


class Parameter(Tensor):
    """A leaf tensor that a Module registers as trainable (``requires_grad=True``)."""

    def __init__(self, data: Tensor, requires_grad: bool = True) -> None:
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter: data must be a Tensor, got {type(data).__name__}")
        super().__init__(data.data, data.backend, requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


_hook_ids = itertools.count()


class RemovableHandle:
    """What ``register_forward_hook``/``register_forward_pre_hook`` return: ``remove()``
    takes the hook off again (also as a context manager, on leaving the ``with`` block)."""

    def __init__(self, hooks: dict[int, Callable[..., Any]], hook_id: int) -> None:
        self._hooks = hooks
        self.id = hook_id

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class Module:
    """Base class of layers; subclasses set attributes in ``__init__`` and define forward."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_forward_pre_hooks", {})
        object.__setattr__(self, "_forward_hooks", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before "
                               "assigning attributes")
        buffers = self._buffers
        if name in buffers and (value is None or type(value) is Tensor):
            buffers[name] = value  # re-assigning a buffer keeps it a buffer
            return
        for table in (self._parameters, self._modules, buffers):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        for table in ("_parameters", "_modules", "_buffers"):
            d = self.__dict__.get(table)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def register_buffer(self, name: str, value: Tensor | None) -> None:
        """A tensor that belongs to the state (saved, moved) but is not trained."""
        self.__dict__.pop(name, None)
        self._buffers[name] = value

    def register_parameter(self, name: str, value: Parameter | None) -> None:
        """Register ``value`` (or ``None``, for an absent optional parameter) under ``name``."""
        if value is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, value)

    # --- traversal ----------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        for prefix, m in self.named_modules():
            for name, p in m._parameters.items():
                yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self) -> Iterator[tuple[str, Tensor]]:
        for prefix, m in self.named_modules():
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{prefix}.{name}" if prefix else name), b

    # --- modes and state ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every submodule, children before their parent, then on ``self``
        (as ``torch.nn.Module.apply``; e.g. a custom initialisation)."""
        if not callable(fn):
            raise TypeError(f"apply: fn must be callable, got {type(fn).__name__}")
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Set ``requires_grad`` on every parameter: ``False`` freezes this module (no
        gradient is computed for it; optimizers skip parameters whose grad is None)."""
        if not isinstance(requires_grad, bool):
            raise TypeError(f"requires_grad_: requires_grad={requires_grad!r} must be a bool")
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer as a NumPy copy, keyed by its dotted name."""
        out = {name: p.numpy() for name, p in self.named_parameters()}
        out.update({name: b.numpy() for name, b in self.named_buffers()})
        return out

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Copy values into this module's parameters and buffers, keeping their backend and
        dtype. With ``strict``, missing or unexpected keys are an error; a shape mismatch is
        always one."""
        own = dict(self.named_parameters())
        own.update(dict(self.named_buffers()))
        if strict:
            missing = sorted(set(own) - set(state_dict))
            unexpected = sorted(set(state_dict) - set(own))
            if missing or unexpected:
                raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys "
                                 f"{unexpected}")
        for key, value in state_dict.items():
            if key not in own:
                continue
            arr = np.asarray(value.numpy() if isinstance(value, Tensor) else value)
            target = own[key]
            if arr.shape != target.shape:
                raise ValueError(f"load_state_dict: {key!r} has shape {arr.shape}; the module "
                                 f"expects {target.shape}")
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"load_state_dict: {key!r} has dtype {arr.dtype}; expected "
                                "real numbers")
            target.data = target.backend.from_numpy(arr, target.dtype)

    def to(self, backend: str | None = None, dtype: Any = None) -> Module:
        """Move every parameter and buffer to ``backend`` and/or convert it to ``dtype``, in
        place (optimizers holding the parameters keep working). Gradients are dropped."""
        if isinstance(backend, str) and backend in ("float32", "float64") and dtype is None:
            backend, dtype = None, backend
        target = get_backend(backend) if backend is not None else None
        dt = as_dtype(dtype) if dtype is not None else None
        for t in list(self.parameters()) + [b for _, b in self.named_buffers()]:
            be = target or t.backend
            new_dtype = dt or t.dtype
            if be is t.backend and new_dtype == t.dtype:
                continue
            t.data = be.from_numpy(t.numpy(), new_dtype)
            t.backend = be
            t.grad = None
        return self

    def double(self) -> Module:
        return self.to(dtype="float64")

    def float(self) -> Module:
        return self.to(dtype="float32")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    # --- hooks --------------------------------------------------------------------------------
    def register_forward_pre_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """Call ``hook(module, args)`` before every ``forward``; ``args`` is the tuple of
        positional inputs. A hook that returns something other than None replaces them (a
        single value is taken as a one-element tuple). Keyword arguments reach ``forward``
        unchanged and are not shown to the hook, as in PyTorch."""
        return self._add_hook("register_forward_pre_hook", self._forward_pre_hooks, hook)

    def register_forward_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after every ``forward``; a hook that returns
        something other than None replaces the output. Hooks run in the order registered."""
        return self._add_hook("register_forward_hook", self._forward_hooks, hook)

    @staticmethod
    def _add_hook(fn: str, hooks: dict[int, Callable[..., Any]],
                  hook: Callable[..., Any]) -> RemovableHandle:
        if not callable(hook):
            raise TypeError(f"{fn}: hook must be callable, got {type(hook).__name__}")
        hook_id = next(_hook_ids)
        hooks[hook_id] = hook
        return RemovableHandle(hooks, hook_id)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return ("\n".join(lines) + "\n)") if len(lines) > 1 else lines[0] + ")"
