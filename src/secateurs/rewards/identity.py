"""Names for Python callables used as rewards.

A reward's name goes into the run fingerprint, so a resumed output is reused only when the name
says the reward is the same. `callable_name(fn)` is `py:MODULE:QUALNAME#HASH`, where HASH covers
what the function computes with: its code (nested functions too), defaults, closure, bound
`self` or partial arguments, and the values of the module globals it reads.

- Plain values (numbers, strings, containers of them, functions, modules, classes) are hashed by
  content, so the same function in a re-run script gets the same name and resumes.
- Any other object in a closure, default, bound self or partial argument (a model, a tokenizer)
  cannot be compared across processes: it is hashed by identity and a per-process token, and the
  name ends with "@process". Such a reward never reuses another process's results (safe, but not
  resumable); give it a name of your own, CallableReward(fn, name="my-rm-v2"), to resume.
- A global object of that kind counts by its type only (re-running a script that loads a model
  into a global must resume); rebinding such a global in one session is not detected.
"""

from __future__ import annotations

import functools
import hashlib
import os
import types
from typing import Any, Callable

PER_PROCESS = "@process"
_NONCE = os.urandom(8).hex()
_MAX_DEPTH = 6
_MAX_ITEMS = 10_000  # larger containers are not hashed by content (they count as objects)


class _Unstable(Exception):
    """An object with no content that can be compared across processes."""


class _Hasher:
    def __init__(self, module: str | None):
        self.module = module  # functions of other modules count by their qualified name only
        self.per_process = False
        self._active: set[int] = set()

    def value(self, obj: Any, depth: int = 0, by_identity: bool = True) -> str:
        """A string that stands for `obj`'s content; objects without one stand for their identity
        (this process only) or, with by_identity=False, their type."""
        try:
            return self._content(obj, depth)
        except (_Unstable, Exception):  # an object that fails to describe itself counts as an object
            if not by_identity:
                return f"instance of {_qualified(type(obj))}"
            self.per_process = True
            return f"object {_qualified(type(obj))} {id(obj):x} {_NONCE}"

    def _content(self, obj: Any, depth: int) -> str:
        if obj is None or obj is Ellipsis or isinstance(obj, (bool, int, float, complex, str, bytes)):
            return f"{type(obj).__name__}:{obj!r}"
        if depth > _MAX_DEPTH or (isinstance(obj, (tuple, list, set, frozenset, dict)) and len(obj) > _MAX_ITEMS):
            raise _Unstable
        if isinstance(obj, (tuple, list)):
            return f"{type(obj).__name__}(" + ",".join(self._content(x, depth + 1) for x in obj) + ")"
        if isinstance(obj, (set, frozenset)):
            return f"{type(obj).__name__}(" + ",".join(sorted(self._content(x, depth + 1) for x in obj)) + ")"
        if isinstance(obj, dict):
            items = sorted(f"{self._content(k, depth + 1)}={self._content(v, depth + 1)}" for k, v in obj.items())
            return "dict(" + ",".join(items) + ")"
        if isinstance(obj, types.ModuleType):
            return f"module:{obj.__name__}"
        if isinstance(obj, type):
            return f"class:{_qualified(obj)}"
        if isinstance(obj, types.CodeType):
            return self.code(obj, depth)
        if isinstance(obj, (types.BuiltinFunctionType, types.MethodWrapperType, types.WrapperDescriptorType)):
            if getattr(obj, "__self__", None) is not None and not isinstance(obj.__self__, types.ModuleType):
                raise _Unstable  # a bound builtin method of some object
            return f"builtin:{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', repr(obj))}"
        if isinstance(obj, types.FunctionType):
            return self.function(obj, depth)
        if isinstance(obj, types.MethodType):
            return f"method({self.function(obj.__func__, depth + 1)};{self.value(obj.__self__, depth + 1)})"
        if isinstance(obj, functools.partial):
            return (f"partial({self.value(obj.func, depth + 1)};{self.value(obj.args, depth + 1)};"
                    f"{self.value(obj.keywords, depth + 1)})")
        raise _Unstable

    def code(self, code: types.CodeType, depth: int) -> str:
        consts = ",".join(self._content(c, depth + 1) for c in code.co_consts)
        return (f"code({code.co_code.hex()};{','.join(code.co_names)};{','.join(code.co_varnames)};"
                f"{','.join(code.co_freevars)};{consts})")

    def function(self, fn: types.FunctionType, depth: int) -> str:
        if id(fn) in self._active or (depth > 0 and fn.__module__ != self.module):
            return f"function:{_qualified(fn)}"  # recursion through globals, or another module's function
        self._active.add(id(fn))
        try:
            parts = [f"function:{_qualified(fn)}", self.code(fn.__code__, depth)]
            parts.append("defaults:" + self.value(fn.__defaults__, depth + 1))
            parts.append("kwdefaults:" + self.value(fn.__kwdefaults__, depth + 1))
            for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
                try:
                    content = cell.cell_contents
                except ValueError:  # an empty cell
                    content = None
                parts.append(f"closure {name}:{self.value(content, depth + 1)}")
            for name in sorted(_global_names(fn.__code__)):
                if name in fn.__globals__:
                    parts.append(f"global {name}:{self.value(fn.__globals__[name], depth + 1, by_identity=False)}")
            return "(" + ";".join(parts) + ")"
        finally:
            self._active.discard(id(fn))


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _global_names(c)
    return names


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}:{getattr(obj, '__qualname__', None) or type(obj).__qualname__}"


def callable_name(fn: Callable) -> str:
    """`py:MODULE:QUALNAME#HASH`, "@process" appended when the hash is valid in this process only."""
    target = fn
    if isinstance(fn, functools.partial):
        target = fn.func
    elif isinstance(fn, types.MethodType):
        target = fn.__func__
    elif not isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, type)):
        target = type(fn)  # a callable object: named after its class
    module = getattr(target, "__module__", None) or "?"
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__
    hasher = _Hasher(module)
    if isinstance(fn, (types.FunctionType, types.MethodType, functools.partial, types.BuiltinFunctionType, type)):
        description = hasher.value(fn)
    else:  # a callable object: its class's __call__ and its state
        state = getattr(fn, "__dict__", None)
        call = getattr(type(fn), "__call__", None)
        description = f"{hasher.value(call)};{hasher.value(state) if state is not None else hasher.value(fn)}"
    digest = hashlib.sha256(description.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"py:{module}:{qualname}#{digest}" + (PER_PROCESS if hasher.per_process else "")
