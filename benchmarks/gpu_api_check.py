#!/usr/bin/env python3
"""Check the package's calls into GPU libraries against the libraries actually installed.

Not part of CI: it needs the real RAPIDS / CuPy / Numba-CUDA wheels (about 9 GB), but no GPU.
Run it in an environment that has them and the package (``pip install --no-deps -e .``)::

    python benchmarks/gpu_api_check.py --out docs/benchmarks/gpu_api_check.txt

What it does
------------
1. Imports every module under ``rapids_geovq.gpu`` and ``rapids_geovq.backends`` (found with
   ``pkgutil.walk_packages``, so added or renamed modules are picked up; a package that does not
   exist is reported as absent, not as a failure).
2. Parses every ``.py`` file under the package with ``ast`` and finds the calls (and attribute
   references and imports) whose target resolves, through the file's imports, to one of
   ``SCOPE``: CuPy, cuML, pylibcugraph, cuGraph, cuDF, dask-cuda, RMM, ``numba.cuda`` (also as
   ``from numba import cuda``), ``distributed``, ``torch.cuda``, ``torch.from_dlpack``.
   Method calls on objects those libraries return are followed where the object's class is known:
   a local variable assigned from a class of those libraries (``nn = NearestNeighbors(...)``), the
   small return-type tables ``RETURNS`` / ``RETURN_PATTERNS``, and the explicit receiver table
   ``RECEIVERS`` (attributes and parameters whose type the code only documents, e.g.
   ``self.client``; entries that no longer match anything are listed, to be updated after a
   rename). Nothing is guessed: a call whose receiver cannot be typed is passed over, except that
   it is listed as "not checked" where its method name is distinctive of a GPU API
   (``DISTINCTIVE``) or the receiver is named like a GPU module (``MODULE_LIKE``, e.g. ``cp``).
   A name's value is the last assignment before the use in the same function (branches are not
   followed).
3. Resolves each target in the installed package and checks that it exists, that every keyword
   used is a parameter, and, where the call has no ``*args``, the number of positional arguments
   and that no required parameter is missing. ``**kw`` built in the same function from a dict
   literal, ``kw.update(k=...)`` and ``kw["k"] = ...`` is expanded into its keywords.
4. Checks the options that the repository's shell scripts pass to ``dask cuda worker``,
   ``dask worker`` and ``dask scheduler`` (including words added later with ``arr+=(...)``)
   against the installed click commands, and choice values such as
   ``--set-rmm-allocator-for-libs cupy,torch``. ``dask cuda worker`` ignores unknown options, so a
   misspelt one would otherwise pass silently.
5. Lists dask-cuda's RMM worker options and which GPU packages import ``cuda.core`` /
   ``cuda.core.experimental`` (the latter is gone from cuda-core 1.x).

Where the parameters come from (the table's "check" column):

``signature``         ``inspect.signature`` of the installed object
``signature+base``    a keyword not named by a class, found in a base class's or (``FORWARDS``) the
                      worker class's signature, which receives the ``**kwargs``
``pyx``               the Cython source (``.pyx``) shipped beside a compiled module: ``def`` /
                      ``cpdef`` header, or a ``cdef class``'s ``__cinit__`` / ``__init__``
``pyi``               the type stub (``.pyi``) shipped beside a compiled module
``docstring-sig``     the signature line that Cython (embedsignature) or Numba-CUDA's device stubs
                      put first in the docstring, e.g. ``add(ary, idx, val)``
``docstring-params``  the names of a numpydoc "Parameters" section (keywords only, no counts)
``exists``            an attribute or import: only that it resolves

Results: ``OK``; ``FAIL`` (missing attribute, unknown keyword, too many positional arguments,
required parameter missing); ``WARN`` (a keyword that only reaches an unchecked ``**kwargs``);
``NOT CHECKED`` (target or receiver type not resolvable statically, or no parameter list found).
The exit status is 1 on any FAIL, failed import or unknown shell-script option (``--strict``:
also on WARN / NOT CHECKED). ``--also PATH`` checks more files (e.g. ``benchmarks/gpu_bench.py``).
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import importlib
import importlib.metadata as md
import inspect
import io
import os
import pkgutil
import platform
import re
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

# Check the real CUDA target of Numba, never its simulator (the tests switch it on without a GPU).
_SIM_WAS = os.environ.get("NUMBA_ENABLE_CUDASIM")
os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
warnings.filterwarnings("ignore")

PACKAGE = "rapids_geovq"
IMPORT_PACKAGES = ("rapids_geovq.gpu", "rapids_geovq.backends")

#: Roots of the external APIs checked (dotted prefixes, matched on whole components).
SCOPE = ("cupy", "cupyx", "cuml", "pylibcugraph", "cugraph", "cudf", "dask_cuda", "rmm", "numba.cuda",
         "distributed", "torch.cuda", "torch.from_dlpack")
#: Import aliases normalised before matching.
ALIASES = {"dask.distributed": "distributed"}

#: What some calls return (where the callee is not a class): dotted callee -> dotted class. Keys
#: are the callee as the code names it, or the defining class's module path plus the method.
RETURNS = {
    "cupy.get_default_memory_pool": "cupy.cuda.MemoryPool",
    "cupy.get_default_pinned_memory_pool": "cupy.cuda.PinnedMemoryPool",
    "distributed.Client.who_has": "builtins.dict",
}
#: The same by pattern: CuPy functions and ndarray methods that return one ndarray (an element
#: of a CuPy array, ``a[i]``, is a CuPy array too: CuPy returns 0-d arrays, not scalars).
RETURN_PATTERNS = [
    (r"^cupy\.(asarray|array|asanyarray|ascontiguousarray|empty|zeros|ones|full|(empty|zeros|ones|full)_like|"
     r"arange|linspace|concatenate|stack|vstack|hstack|tile|repeat|argmax|argmin|argsort|argpartition|sort|"
     r"take_along_axis|isfinite|isnan|isinf|sqrt|abs|exp|log|minimum|maximum|from_dlpack|flatnonzero|cumsum|"
     r"matmul|dot|einsum)$", "cupy.ndarray"),
    (r"^cupy\.ndarray\.(astype|reshape|copy|ravel|flatten|transpose|sum|min|max|all|any|mean|cumsum|"
     r"argmax|argmin|take|view|squeeze|__getitem__)$", "cupy.ndarray"),
]
ARRAY_CLASSES = ("cupy.ndarray",)

#: Receivers whose type the code only documents: (receiver text, enclosing class or None for any,
#: target, why). target is a dotted module ("module:...") or class ("class:..." = an instance of
#: it), or "internal:..." for the package's own wrappers (their calls are not external).
RECEIVERS = [
    ("self.plc", "_PlcSolver", "module:pylibcugraph", "_load_backend passes the pylibcugraph module"),
    ("self.cugraph", "_CugraphSolver", "module:cugraph", "_load_backend passes the cugraph module"),
    ("self.cudf", "_CugraphSolver", "module:cudf", "_load_backend passes the cudf module"),
    ("plc", "_PlcSolver", "module:pylibcugraph", "_load_backend passes the pylibcugraph module"),
    ("self.client", "DaskEngine", "class:distributed.Client", "DaskEngine(client) documents a Client"),
    ("client", "DaskEngine", "class:distributed.Client", "DaskEngine(client) documents a Client"),
    ("self.cluster", "DaskEngine", "class:distributed.LocalCluster",
     "a LocalCluster or dask_cuda.LocalCUDACluster (a LocalCluster subclass)"),
    ("cp", None, "module:cupy", "CuPy: imported as cp, returned by _load_backend or passed in as cp"),
    ("xp", None, "module:cupy", "array module: CuPy on the GPU path (NumPy on the CPU); checked against CuPy"),
    ("eng", None, "internal:engine", "the package's engine wrapper (LocalEngine / DaskEngine)"),
    ("engine", None, "internal:engine", "the package's engine wrapper (LocalEngine / DaskEngine)"),
    ("self.engine", None, "internal:engine", "the package's engine wrapper (LocalEngine / DaskEngine)"),
    ("R", None, "internal:shards", "the package's RowShards"),
    ("solver", None, "internal:solver", "the package's _PlcSolver / _CugraphSolver"),
]

#: Keyword forwarding through **kwargs that a base-class search does not see: class -> classes
#: whose signatures receive the keywords (LocalCluster hands **worker_kwargs to its worker class,
#: a Nanny with processes=True, else a Worker).
FORWARDS = {
    "distributed.deploy.local.LocalCluster": ("distributed.Nanny", "distributed.Worker"),
}

#: Names that, as an unresolved receiver (a parameter, say), most likely hold a GPU module: a
#: call on one is reported as "not checked" rather than passed over.
MODULE_LIKE = {"cp", "cupy", "cupyx", "plc", "pylibcugraph", "cugraph", "cudf", "cuml", "rmm", "cuda", "dask_cuda",
               "numba_cuda"}

#: Method names distinctive enough that a call on an unresolved receiver is reported as
#: "not checked" (so new code that calls a GPU object through an untyped name shows up).
DISTINCTIVE = {"kneighbors", "who_has", "scatter", "wait_for_workers", "scheduler_info", "from_cudf_adjlist",
               "from_cudf_edgelist", "free_bytes", "free_all_blocks", "used_bytes", "total_bytes", "memGetInfo",
               "run_on_scheduler", "rebalance", "replicate", "get_worker_logs", "set_allocator"}

DIST_PATTERN = re.compile(r"^(cupy|cuml|pylibcugraph|cugraph|cudf|pylibcudf|dask-cudf|rmm|librmm|dask|distributed|"
                          r"rapids-dask-dependency|numba|numba-cuda|llvmlite|torch|cuda-core|cuda-bindings|"
                          r"cuda-python|cuda-pathfinder|pylibraft|raft-dask|libcuml|libcugraph|nvidia-ml-py|"
                          r"numpy|scipy)($|-)", re.I)


# --- symbolic values -------------------------------------------------------------------------

@dataclass(frozen=True)
class Sym:
    """What an expression denotes, statically.

    kind: "path" (an external dotted name), "inst" (an instance of the class at ``path``),
    "result" (what calling ``inner`` returns), "attr" (attribute ``name`` of ``inner``),
    "item" (an element of ``inner``), "internal" (the package's own or a local object).
    """

    kind: str
    path: str = ""
    inner: "Sym | None" = None
    name: str = ""
    note: str = ""

    def root(self) -> str:
        s = self
        while s.inner is not None:
            s = s.inner
        return s.path if s.kind in ("path", "inst") else ""

    def text(self) -> str:
        if self.kind == "path":
            return self.path
        if self.kind == "inst":
            return f"<{self.path}>"
        if self.kind == "result":
            return f"{self.inner.text()}()"
        if self.kind == "attr":
            return f"{self.inner.text()}.{self.name}"
        if self.kind == "item":
            return f"{self.inner.text()}[...]"
        return f"<{self.path or 'internal'}>"


def attr_of(s: Sym | None, name: str) -> Sym | None:
    if s is None:
        return None
    if s.kind == "path":
        return Sym("path", f"{s.path}.{name}", note=s.note)
    if s.kind == "internal":
        return s
    return Sym("attr", inner=s, name=name, note=s.note)


def in_scope(dotted: str) -> bool:
    return any(dotted == r or dotted.startswith(r + ".") for r in SCOPE)


def normalise(dotted: str) -> str:
    for a, b in ALIASES.items():
        if dotted == a or dotted.startswith(a + "."):
            return b + dotted[len(a):]
    return dotted


# --- scopes of one file ----------------------------------------------------------------------

class Scope:
    def __init__(self, node, parent, kind: str, name: str):
        self.node, self.parent, self.kind, self.name = node, parent, kind, name
        # name -> [(line, ("import", dotted) | ("expr", expr) | ("unpack", expr) | ("param", name) | ("opaque",))]
        self.bindings: dict[str, list] = {}
        self.selfattrs: dict[str, list] = {}  # class scopes: self.X -> [(expr, scope)]
        self.dicts: dict[str, dict] = {}  # name -> {"keys": [..], "complete": bool}

    def bind(self, name: str, value, line: int) -> None:
        self.bindings.setdefault(name, []).append((line, value))

    def enclosing_class(self):
        s = self
        while s is not None:
            if s.kind == "function" and s.parent is not None and s.parent.kind == "class":
                return s.parent
            if s.kind == "class":
                return s
            s = s.parent
        return None


def _target_names(t):
    if isinstance(t, ast.Name):
        return [t]
    if isinstance(t, (ast.Tuple, ast.List)):
        return [n for e in t.elts for n in _target_names(e)]
    if isinstance(t, ast.Starred):
        return _target_names(t.value)
    return []


class Collector(ast.NodeVisitor):
    """Pass 1: scopes, their bindings (imports, assignments, parameters) and kwargs dicts."""

    def __init__(self, tree):
        self.module = Scope(tree, None, "module", "<module>")
        self.scope_of: dict[int, Scope] = {}
        self.imports: list = []  # (node, scope, dotted)
        self.stack = [self.module]
        self.line = 0
        self.scope_of[id(tree)] = self.module
        self.generic_visit(tree)

    @property
    def cur(self) -> Scope:
        return self.stack[-1]

    def visit(self, node):
        if isinstance(node, ast.stmt):
            self.line = node.lineno  # bindings are dated by the statement that makes them
        return super().visit(node)

    def _enter(self, node, kind, name):
        s = Scope(node, self.cur, kind, name)
        self.scope_of[id(node)] = s
        return s

    def visit_ClassDef(self, node):
        for d in node.decorator_list + node.bases + node.keywords:
            self.visit(d)
        self.cur.bind(node.name, ("opaque",), self.line)
        s = self._enter(node, "class", node.name)
        self.stack.append(s)
        for b in node.body:
            self.visit(b)
        self.stack.pop()

    def _function(self, node, name):
        for d in getattr(node, "decorator_list", []):
            self.visit(d)
        a = node.args
        for d in a.defaults + [d for d in a.kw_defaults if d is not None]:
            self.visit(d)
        if name:
            self.cur.bind(name, ("opaque",), self.line)
        s = self._enter(node, "function", name or "<lambda>")
        for p in a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]:
            s.bind(p.arg, ("param", p.arg), node.lineno)
        self.stack.append(s)
        body = node.body if isinstance(node.body, list) else [node.body]
        for b in body:
            self.visit(b)
        self.stack.pop()

    def visit_FunctionDef(self, node):
        self._function(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        self._function(node, None)

    def visit_Import(self, node):
        for a in node.names:
            dotted = normalise(a.name)
            if a.asname:
                self.cur.bind(a.asname, ("import", dotted), self.line)
            else:
                top = a.name.split(".")[0]
                self.cur.bind(top, ("import", normalise(top)), self.line)
            self.imports.append((node, self.cur, dotted))

    def visit_ImportFrom(self, node):
        for a in node.names:
            name = a.asname or a.name
            if node.level:
                self.cur.bind(name, ("opaque",), self.line)
                continue
            dotted = normalise(f"{node.module}.{a.name}")
            self.cur.bind(name, ("import", dotted), self.line)
            self.imports.append((node, self.cur, dotted))

    def visit_Assign(self, node):
        self.visit(node.value)
        for t in node.targets:
            self._assign(t, node.value)
            self.visit(t)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)
            self._assign(node.target, node.value)

    def visit_AugAssign(self, node):
        self.visit(node.value)
        for n in _target_names(node.target):
            self.cur.bind(n.id, ("opaque",), self.line)

    def visit_NamedExpr(self, node):
        self.visit(node.value)
        self.cur.bind(node.target.id, ("expr", node.value), self.line)

    def _for_target(self, target):
        for n in _target_names(target):
            self.cur.bind(n.id, ("opaque",), self.line)

    def visit_For(self, node):
        self._for_target(node.target)
        self.generic_visit(node)

    visit_AsyncFor = visit_For

    def visit_comprehension(self, node):
        self._for_target(node.target)
        self.generic_visit(node)

    def visit_With(self, node):
        for it in node.items:
            if it.optional_vars is not None:
                for n in _target_names(it.optional_vars):
                    self.cur.bind(n.id, ("opaque",), self.line)
        self.generic_visit(node)

    visit_AsyncWith = visit_With

    def visit_ExceptHandler(self, node):
        if node.name:
            self.cur.bind(node.name, ("opaque",), self.line)
        self.generic_visit(node)

    def _assign(self, target, value):
        s = self.cur
        if isinstance(target, ast.Name):
            s.bind(target.id, ("expr", value), self.line)
            d = _dict_literal(value)
            if d is not None:
                info = s.dicts.setdefault(target.id, {"keys": [], "complete": True})
                info["keys"] += [k for k in d[0] if k not in info["keys"]]
                info["complete"] &= d[1]
        elif isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts):
                for t, v in zip(target.elts, value.elts):
                    self._assign(t, v)
            else:
                for n in _target_names(target):
                    s.bind(n.id, ("unpack", value), self.line)
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
            cls = s.enclosing_class()
            if cls is not None:
                cls.selfattrs.setdefault(target.attr, []).append((value, s))
        elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
            info = s.dicts.get(target.value.id)
            if info is not None:
                k = target.slice
                if isinstance(k, ast.Constant) and isinstance(k.value, str):
                    if k.value not in info["keys"]:
                        info["keys"].append(k.value)
                else:
                    info["complete"] = False

    def visit_Call(self, node):
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in self.cur.dicts:
            info = self.cur.dicts[f.value.id]
            if f.attr == "update":
                for kw in node.keywords:
                    if kw.arg is None:
                        info["complete"] = False
                    elif kw.arg not in info["keys"]:
                        info["keys"].append(kw.arg)
                for a in node.args:
                    d = _dict_literal(a)
                    if d is None:
                        info["complete"] = False
                    else:
                        info["keys"] += [k for k in d[0] if k not in info["keys"]]
                        info["complete"] &= d[1]
            elif f.attr == "setdefault" and node.args and isinstance(node.args[0], ast.Constant):
                if node.args[0].value not in info["keys"]:
                    info["keys"].append(node.args[0].value)
            elif f.attr in ("pop", "clear", "popitem"):
                info["complete"] = False
        self.generic_visit(node)


def _dict_literal(v):
    """(keys, complete) of a dict literal or dict(k=...) call, else None."""
    if isinstance(v, ast.Dict):
        keys, complete = [], True
        for k in v.keys:
            if isinstance(k, ast.Constant) and isinstance(k.value, str):
                keys.append(k.value)
            else:
                complete = False
        return keys, complete
    if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "dict" and not v.args:
        return [k.arg for k in v.keywords if k.arg], all(k.arg for k in v.keywords)
    return None


# --- resolution of expressions to symbols ----------------------------------------------------

class Resolver:
    def __init__(self, collector: Collector, used_receivers: set):
        self.c = collector
        self.used = used_receivers
        self._busy: set = set()

    def receiver(self, text: str, scope: Scope):
        cls = scope.enclosing_class()
        for i, (recv, want_cls, target, why) in enumerate(RECEIVERS):
            if recv == text and (want_cls is None or (cls is not None and cls.name == want_cls)):
                self.used.add(i)
                kind, _, dotted = target.partition(":")
                if kind == "module":
                    return Sym("path", dotted, note=f"receiver table: {text} = {dotted} ({why})")
                if kind == "class":
                    return Sym("inst", dotted, note=f"receiver table: {text} is a {dotted} ({why})")
                return Sym("internal", dotted)
        return None

    def name(self, name: str, scope: Scope, line: int = 0) -> Sym | None:
        r = self.receiver(name, scope)
        if r is not None:
            return r
        s, first = scope, True
        while s is not None:
            if s.kind == "class" and not first:  # class bodies are not visible from their methods
                s = s.parent
                continue
            if name in s.bindings:
                return self.binding(name, s, line if first else None)
            first = False
            s = s.parent
        return None

    def binding(self, name: str, s: Scope, line: int | None) -> Sym | None:
        """The value of the binding that reaches ``line``: in the scope of the use, the last one made
        on an earlier line (straight-line order; branches are not followed); from an enclosing
        scope, the last one in the file."""
        key = (id(s), name)
        if key in self._busy:
            return None
        self._busy.add(key)
        try:
            cands = s.bindings[name]
            if line is not None:
                cands = [c for c in cands if c[0] < line] or cands
            _, b = max(cands, key=lambda c: c[0])
            if b[0] == "import":
                return Sym("path", b[1])
            if b[0] == "expr":
                return self.expr(b[1], s)
            if b[0] == "unpack":
                inner = self.expr(b[1], s)
                return Sym("item", inner=inner) if inner is not None and inner.root() else inner
            return Sym("internal", b[0])
        finally:
            self._busy.discard(key)

    def expr(self, e, scope: Scope) -> Sym | None:
        text = _dotted_text(e)
        if text is not None and "." in text:
            parts = text.split(".")
            for i in range(len(parts), 1, -1):  # the longest receiver-table prefix first
                r = self.receiver(".".join(parts[:i]), scope)
                if r is not None:
                    for p in parts[i:]:
                        r = attr_of(r, p)
                    return r
            if text.startswith("self."):
                cls = scope.enclosing_class()
                parts = text.split(".")
                if cls is not None and parts[1] in cls.selfattrs:
                    base = self.selfattr(cls, parts[1])
                    for p in parts[2:]:
                        base = attr_of(base, p)
                    return base
        if isinstance(e, ast.Name):
            return self.name(e.id, scope, e.lineno)
        if isinstance(e, ast.Attribute):
            return attr_of(self.expr(e.value, scope), e.attr)
        if isinstance(e, ast.Call):
            f = self.expr(e.func, scope)
            if f is None or f.kind == "internal":
                return f
            return Sym("result", inner=f, note=f.note)
        if isinstance(e, ast.Subscript):
            inner = self.expr(e.value, scope)
            return Sym("item", inner=inner) if inner is not None and inner.root() else None
        if isinstance(e, ast.Await):
            return self.expr(e.value, scope)
        return None

    def selfattr(self, cls: Scope, attr: str) -> Sym | None:
        key = (id(cls), "self." + attr)
        if key in self._busy:
            return None
        self._busy.add(key)
        try:
            for value, s in cls.selfattrs[attr]:
                r = self.expr(value, s)
                if r is not None and r.root() and in_scope(r.root()):
                    return r
            return Sym("internal", "self attribute")
        finally:
            self._busy.discard(key)


def _dotted_text(e) -> str | None:
    parts = []
    while isinstance(e, ast.Attribute):
        parts.append(e.attr)
        e = e.value
    if isinstance(e, ast.Name):
        parts.append(e.id)
        return ".".join(reversed(parts))
    return None


# --- evaluating symbols against the installed packages ---------------------------------------

class Unresolved(Exception):
    """The static type of something is not known: the row is NOT CHECKED."""


class Missing(Exception):
    """An attribute or module that the installed package lacks: the row FAILs."""


_IMPORT_CACHE: dict = {}


def import_path(dotted: str):
    """The object a dotted path names, as the code sees it: the top-level module, then attributes
    (``pylibcugraph.sssp`` is the function the package binds, not the submodule of that name); a
    submodule not yet imported is imported, as the code's own ``import a.b`` would."""
    if dotted in _IMPORT_CACHE:
        return _IMPORT_CACHE[dotted]
    parts = dotted.split(".")
    try:
        obj = importlib.import_module(parts[0])
    except ModuleNotFoundError as exc:
        raise Missing(f"no module {parts[0]!r} ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - an import that breaks is a finding
        raise Missing(f"import {parts[0]} fails: {type(exc).__name__}: {exc}") from exc
    for i, p in enumerate(parts[1:], start=1):
        here = ".".join(parts[:i])
        try:
            obj = getattr(obj, p)
            continue
        except AttributeError:
            pass
        if not inspect.ismodule(obj):
            raise Missing(f"{here} has no attribute {p!r}")
        try:
            obj = importlib.import_module(f"{here}.{p}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name != f"{here}.{p}":
                raise Missing(f"importing {here}.{p} needs {exc.name}, which is not installed") from exc
            raise Missing(f"{here} has no attribute or submodule {p!r}") from None
        except Exception as exc:  # noqa: BLE001
            raise Missing(f"import {here}.{p} fails: {type(exc).__name__}: {exc}") from exc
    _IMPORT_CACHE[dotted] = obj
    return obj


@dataclass
class Value:
    obj: object = None
    instance_of: type | None = None  # the value is an instance of this class
    owner: type | None = None  # obj is an attribute looked up on this class (a method: drop self)
    desc: str = ""


def evaluate(s: Sym) -> Value:
    if s.kind == "path":
        return Value(obj=import_path(s.path), desc=s.path)
    if s.kind == "inst":
        cls = import_path(s.path)
        return Value(instance_of=cls, desc=f"<{s.path}>")
    if s.kind == "result":
        v = evaluate(s.inner)
        if v.instance_of is None and inspect.isclass(v.obj):
            return Value(instance_of=v.obj, desc=f"<{qualname(v.obj)}>")
        for key in _return_keys(s.inner, v):
            target = RETURNS.get(key) or next((t for pat, t in RETURN_PATTERNS if re.match(pat, key)), None)
            if target:
                return Value(instance_of=import_path(target), desc=f"<{target}>")
        raise Unresolved(f"return type of {s.inner.text()} not known (add it to RETURNS)")
    if s.kind == "attr":
        v = evaluate(s.inner)
        if v.instance_of is not None:
            cls = v.instance_of
            try:
                obj = getattr(cls, s.name)
            except AttributeError:
                raise Missing(f"{qualname(cls)} has no attribute {s.name!r}") from None
            return Value(obj=obj, owner=cls, desc=f"{qualname(cls)}.{s.name}")
        try:
            return Value(obj=getattr(v.obj, s.name), desc=f"{v.desc}.{s.name}")
        except AttributeError:
            raise Missing(f"{v.desc} has no attribute {s.name!r}") from None
    if s.kind == "item":
        v = evaluate(s.inner)
        if v.instance_of is not None and any(_is_class(v.instance_of, c) for c in ARRAY_CLASSES):
            return v
        raise Unresolved(f"element of {s.inner.text()}: type not known")
    raise Unresolved(f"{s.text()} not resolvable")


def _is_class(cls, dotted: str) -> bool:
    try:
        return inspect.isclass(cls) and issubclass(cls, import_path(dotted))
    except (Missing, TypeError):
        return False


def _return_keys(callee: Sym, v: Value) -> list[str]:
    """Names under which RETURNS may list a callee: as the code names it (``cupy.asarray``,
    ``distributed.Client.who_has``) and by the defining class (``cupy.ndarray.astype``)."""
    keys = []
    if callee.kind == "path":
        keys.append(callee.path)
    if callee.kind == "attr" and callee.inner.kind == "inst":
        keys.append(f"{callee.inner.path}.{callee.name}")
    if v.owner is not None and callee.kind == "attr":
        for cls in v.owner.__mro__:
            for dotted in (f"{cls.__module__}.{cls.__qualname__}", qualname(cls)):
                keys.append(f"{dotted}.{callee.name}")
        for dotted in ARRAY_CLASSES:
            if _is_class(v.owner, dotted):
                keys.append(f"{dotted}.{callee.name}")
    return keys


def qualname(obj) -> str:
    mod = getattr(obj, "__module__", None) or ""
    return f"{mod}.{getattr(obj, '__qualname__', getattr(obj, '__name__', repr(obj)))}".lstrip(".")


# --- parameter lists: signature, .pyx, .pyi, docstrings ---------------------------------------

P = inspect.Parameter


def _split_top(text: str, sep: str = ",") -> list[str]:
    out, depth, cur, quote = [], 0, [], None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [o.strip() for o in out]


def signature_from_params(params: str) -> inspect.Signature:
    """A Signature from a parameter list in Python or Cython syntax (C types dropped)."""
    ps, kind, seen = [], P.POSITIONAL_OR_KEYWORD, set()
    for raw in _split_top(re.sub(r"#[^\n]*", "", params).replace("\n", " ")):
        if not raw:
            continue
        if raw == "/":
            ps = [p.replace(kind=P.POSITIONAL_ONLY) for p in ps]
            continue
        if raw == "*":
            kind = P.KEYWORD_ONLY
            continue
        left, eq, _default = raw.partition("=")
        left = re.sub(r"\s+(not|or)\s+None\s*$", "", left.strip())
        left = left.split(":")[0].strip() if not re.search(r"\[\s*:", left) else left
        m = re.search(r"(\*{0,2})\s*([A-Za-z_]\w*)\s*$", left)
        if not m:
            raise ValueError(f"cannot read parameter {raw!r}")
        stars, name = m.groups()
        if name in seen:
            continue
        seen.add(name)
        if stars == "**":
            ps.append(P(name, P.VAR_KEYWORD))
        elif stars == "*":
            ps.append(P(name, P.VAR_POSITIONAL))
            kind = P.KEYWORD_ONLY
        else:
            ps.append(P(name, kind, default=None if eq else P.empty))
    return inspect.Signature(ps, __validate_parameters__=False)


def _balanced(text: str, start: int) -> str | None:
    """The text between the '(' at ``start`` and its matching ')'."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def _module_file(obj) -> Path | None:
    modname = getattr(obj, "__module__", None)
    if modname is None and hasattr(obj, "__objclass__"):
        modname = obj.__objclass__.__module__
    mod = sys.modules.get(modname or "")
    f = getattr(mod, "__file__", None)
    return Path(f) if f else None


def _sibling(path: Path, suffix: str) -> Path | None:
    stem = path.name.split(".")[0]
    cand = path.with_name(stem + suffix)
    return cand if cand.is_file() else None


def _pyx_signature(obj, owner) -> inspect.Signature | None:
    """From the .pyx beside the compiled module: def/cpdef header, or __cinit__/__init__ of a class."""
    target_cls = obj if inspect.isclass(obj) else owner
    f = _module_file(target_cls if target_cls is not None else obj)
    pyx = _sibling(f, ".pyx") if f else None
    if pyx is None:
        return None
    src = pyx.read_text(errors="replace")
    if inspect.isclass(obj) or owner is not None:
        cls = obj if inspect.isclass(obj) else owner
        m = re.search(rf"^(?:cdef\s+(?:public\s+)?)?class\s+{re.escape(cls.__name__)}\b.*?:\s*$", src, re.M)
        if not m:
            return None
        body_start = m.end()
        nxt = re.search(r"^\S", src[body_start:], re.M)
        body = src[body_start : body_start + nxt.start()] if nxt else src[body_start:]
        names = ("__init__", "__cinit__") if inspect.isclass(obj) else (getattr(obj, "__name__", ""),)
        sigs = []
        for n in names:
            mm = re.search(rf"^\s+(?:def|cpdef)\s+(?:[\w\[\]\*]+\s+)*?{re.escape(n)}\s*\(", body, re.M)
            if mm:
                params = _balanced(body, mm.end() - 1)
                if params is not None:
                    sig = signature_from_params(params)
                    ps = list(sig.parameters.values())
                    sigs.append(sig.replace(parameters=ps[1:]) if ps and ps[0].name == "self" else sig)
        if not sigs:
            return None
        return sigs[0] if len(sigs) == 1 else _intersect(sigs)
    name = getattr(obj, "__name__", None)
    mm = re.search(rf"^(?:def|cpdef)\s+(?:[\w\[\]\*]+\s+)*?{re.escape(name)}\s*\(", src, re.M) if name else None
    if not mm:
        return None
    params = _balanced(src, mm.end() - 1)
    return signature_from_params(params) if params is not None else None


def _intersect(sigs):
    """A Cython class's __cinit__ and __init__ both receive the constructor's arguments: a keyword
    must suit both. Returned: the one without **kwargs (the stricter), or the first."""
    for s in sigs:
        if not any(p.kind == P.VAR_KEYWORD for p in s.parameters.values()):
            return s
    return sigs[0]


def _pyi_signature(obj, owner) -> inspect.Signature | None:
    target_cls = obj if inspect.isclass(obj) else owner
    f = _module_file(target_cls if target_cls is not None else obj)
    pyi = _sibling(f, ".pyi") if f else None
    if pyi is None:
        return None
    tree = ast.parse(pyi.read_text(errors="replace"))
    cls_name = target_cls.__name__ if target_cls is not None else None
    fn_name = "__init__" if inspect.isclass(obj) else getattr(obj, "__name__", None)
    body = tree.body
    if cls_name:
        cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name), None)
        if cls is None:
            return None
        body = cls.body
    defs = [n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == fn_name]
    if not defs:
        return None
    sig = signature_from_params(ast.unparse(defs[0].args))
    ps = list(sig.parameters.values())
    return sig.replace(parameters=ps[1:]) if cls_name and ps and ps[0].name in ("self", "cls") else sig


def _doc_signature(obj, drop_self: bool) -> inspect.Signature | None:
    doc = inspect.getdoc(obj) or ""
    first = next((ln.strip() for ln in doc.splitlines() if ln.strip()), "")
    m = re.match(r"^([\w.]+)\((.*)\)\s*(->.*)?$", first)
    if not m:
        return None
    want = getattr(obj, "__name__", "")
    if want and m.group(1).split(".")[-1] != want:
        return None
    sig = signature_from_params(m.group(2))
    ps = list(sig.parameters.values())
    if drop_self and ps and ps[0].name == "self":
        sig = sig.replace(parameters=ps[1:])
    return sig


def _doc_params(obj) -> list[str] | None:
    doc = inspect.getdoc(obj) or ""
    m = re.search(r"^Parameters\n-{3,}\n(.*?)(?:\n\n(?=[A-Z][\w ]*\n-{3,})|\Z)", doc, re.S | re.M)
    if not m:
        return None
    names = re.findall(r"^([A-Za-z_]\w*)\s*(?::|$)", m.group(1), re.M)
    return names or None


def _uninformative(sig: inspect.Signature) -> bool:
    kinds = [p.kind for p in sig.parameters.values() if p.name not in ("self",)]
    return kinds == [P.VAR_POSITIONAL, P.VAR_KEYWORD] or kinds == [P.VAR_POSITIONAL] or kinds == [P.VAR_KEYWORD]


def _is_device_stub(obj) -> bool:
    try:
        from numba.cuda.stubs import Stub
    except Exception:  # noqa: BLE001
        return False
    if inspect.isclass(obj) and issubclass(obj, Stub):
        return True
    return type(obj).__name__ in ("_Intrinsic", "Intrinsic")


def parameters_of(v: Value):
    """(Signature or list of names, how it was found, whether a self must be dropped)."""
    obj, owner = v.obj, v.owner
    is_method = owner is not None and not isinstance(inspect.getattr_static(owner, getattr(obj, "__name__", ""), None),
                                                     (staticmethod, classmethod))
    if _is_device_stub(obj):
        sig = _doc_signature(obj, False)
        if sig is not None:
            return sig, "docstring-sig (Numba-CUDA device function)"
        return None, "no signature line in the device function's docstring"
    if type(obj).__name__ == "ufunc" and hasattr(obj, "nin") and hasattr(obj, "nout"):
        # CuPy's ufuncs: nin inputs, nout optional outputs, and the keywords that ufunc.__call__
        # documents (its own signature is (*args, **kwargs))
        doc = inspect.getdoc(type(obj).__call__) or ""
        kws = [k for k in re.findall(r"^ {4}(\w+)(?: \([^)]*\))?:", doc, re.M) if k != "args"]
        ps = [P(f"x{i}", P.POSITIONAL_ONLY) for i in range(obj.nin)]
        ps += [P(f"out{i}", P.POSITIONAL_ONLY, default=None) for i in range(obj.nout)]
        ps += [P(k, P.KEYWORD_ONLY, default=None) for k in kws if k not in ("args",)]
        if kws:
            return inspect.Signature(ps), "ufunc (nin/nout, keywords from ufunc.__call__'s docstring)"
    sig = None
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        pass
    if sig is not None and not _uninformative(sig):
        ps = list(sig.parameters.values())
        if is_method and (inspect.isfunction(obj) or inspect.ismethoddescriptor(obj)) and ps and \
                ps[0].kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD) and ps[0].name in ("self", "cls"):
            sig = sig.replace(parameters=ps[1:])
        return sig, "signature"
    for how, fn in (("pyx", lambda: _pyx_signature(obj, owner if is_method else None)),
                    ("pyi", lambda: _pyi_signature(obj, owner if is_method else None)),
                    ("docstring-sig", lambda: _doc_signature(obj, True))):
        try:
            s = fn()
        except Exception:  # noqa: BLE001 - a source we cannot read: try the next one
            s = None
        if s is not None:
            return s, how
    if inspect.isclass(obj):
        init = getattr(obj, "__init__", None)
        s = _doc_signature(init, True) if init is not None else None
        if s is not None:
            return s, "docstring-sig"
    names = _doc_params(obj)
    if names:
        return names, "docstring-params"
    return None, "no signature, Cython source, stub or documented parameter list found"


def _forward_targets(obj) -> list:
    out = []
    if inspect.isclass(obj):
        for base in obj.__mro__[1:]:
            if base is object:
                continue
            out.append(base)
            for fw in FORWARDS.get(f"{base.__module__}.{base.__qualname__}", ()):
                try:
                    out.append(import_path(fw))
                except Missing:
                    pass
        for fw in FORWARDS.get(f"{obj.__module__}.{obj.__qualname__}", ()):
            try:
                out.append(import_path(fw))
            except Missing:
                pass
    return out


def check_call(v: Value, npos: int, starred: bool, kwnames: list[str], partial: bool):
    """(result, check method, detail)."""
    params, how = parameters_of(v)
    if params is None:
        return "NOT CHECKED", "-", how
    problems, notes = [], []
    if isinstance(params, list):  # names only
        for k in kwnames:
            if k not in params:
                problems.append(f"keyword {k!r} not among the documented parameters ({', '.join(params)})")
        detail = "; ".join(problems) or f"keywords {kwnames or '-'} documented; positional count not checked"
        return ("FAIL" if problems else "OK"), how, detail
    ps = list(params.parameters.values())
    named = {p.name for p in ps if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)}
    varkw = next((p.name for p in ps if p.kind == P.VAR_KEYWORD), None)
    varpos = any(p.kind == P.VAR_POSITIONAL for p in ps)
    positional = [p for p in ps if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    warn = []
    for k in kwnames:
        if k in named:
            continue
        if varkw is None:
            problems.append(f"unexpected keyword {k!r}")
            continue
        where = None
        for t in _forward_targets(v.obj):
            try:
                ts = inspect.signature(t)
            except (TypeError, ValueError):
                continue
            if k in ts.parameters and ts.parameters[k].kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY):
                where = t
                break
        if where is not None:
            notes.append(f"{k} -> **{varkw} -> {where.__name__}")
            how = "signature+base" if how == "signature" else how + "+base"
        else:
            warn.append(f"{k!r} only reaches **{varkw} (not verified)")
    if not starred:
        if npos > len(positional) and not varpos:
            problems.append(f"{npos} positional arguments, at most {len(positional)} accepted")
        for p in positional[:npos]:
            if p.name in kwnames:
                problems.append(f"{p.name!r} given both positionally and by keyword")
        if not partial:
            for i, p in enumerate(ps):
                if p.default is not P.empty or p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
                    continue
                if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD) and positional.index(p) < npos:
                    continue
                if p.kind != P.POSITIONAL_ONLY and p.name in kwnames:
                    continue
                problems.append(f"required parameter {p.name!r} not given")
    if problems:
        return "FAIL", how, "; ".join(problems)
    detail = f"{npos}{'+*' if starred else ''} positional, keywords: {', '.join(kwnames) or '-'}"
    if notes:
        detail += " (" + "; ".join(notes) + ")"
    if warn:
        return "WARN", how, detail + "; " + "; ".join(warn)
    return "OK", how, detail


# --- the walk over the package's calls -------------------------------------------------------

@dataclass
class Row:
    site: str
    callee: str
    method: str
    result: str
    detail: str
    kind: str = "call"  # call | attr | import
    lines: list = field(default_factory=list)


class Checker(ast.NodeVisitor):
    def __init__(self, path: Path, rel: str, used_receivers: set):
        self.rel = rel
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.col = Collector(self.tree)
        self.res = Resolver(self.col, used_receivers)
        self.rows: list[Row] = []
        self.attrs: dict = {}  # (dotted) -> [lines]
        self.stack = [self.col.module]
        self.func_nodes: set = set()  # ids of expressions already checked as call targets

    @property
    def cur(self) -> Scope:
        return self.stack[-1]

    def run(self) -> list[Row]:
        self.generic_visit(self.tree)
        for node, scope, dotted in self.col.imports:
            if in_scope(dotted):
                self._import_row(node, dotted)
        for dotted, lines in self.attrs.items():
            self._attr_row(dotted, lines)
        return self.rows

    def _scoped(self, node):
        self.stack.append(self.col.scope_of[id(node)])
        self.generic_visit(node)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _scoped

    def visit_Attribute(self, node):
        if id(node) not in self.func_nodes:
            s = self.res.expr(node, self.cur)
            if s is not None and s.kind == "path" and in_scope(s.path):
                self.attrs.setdefault(s.path, []).append(node.lineno)
                return  # the prefixes of a checked attribute are checked with it
        self.generic_visit(node)

    def visit_Call(self, node):
        f = node.func
        self.func_nodes.add(id(f))
        for a in node.args:
            self.visit(a)
        for k in node.keywords:
            self.visit(k.value)
        if isinstance(f, ast.Attribute):
            self.visit(f.value)  # a receiver that is itself a call or attribute
        elif not isinstance(f, ast.Name):
            self.visit(f)
        s = self.res.expr(f, self.cur)
        site = f"{self.rel}:{node.lineno}"
        if s is None or s.kind == "internal" or not s.root() or not in_scope(s.root()):
            base = _dotted_text(f.value) if isinstance(f, ast.Attribute) else None
            unresolved = s is None or (s.kind != "internal" and not s.root())
            module_like = base is not None and base.split(".")[0] in MODULE_LIKE and (s is None or s.kind == "internal")
            if isinstance(f, ast.Attribute) and ((f.attr in DISTINCTIVE and unresolved) or module_like):
                self.rows.append(Row(site, f"{_dotted_text(f.value) or ast.unparse(f.value)}.{f.attr}", "-",
                                     "NOT CHECKED", "receiver's type unknown: add it to RECEIVERS"))
            return
        npos = sum(1 for a in node.args if not isinstance(a, ast.Starred))
        starred = any(isinstance(a, ast.Starred) for a in node.args)
        kwnames, partial, extra = [], False, []
        for k in node.keywords:
            if k.arg is not None:
                kwnames.append(k.arg)
                continue
            name = k.value.id if isinstance(k.value, ast.Name) else None
            info = self._dict_info(name)
            if info is None:
                partial = True
                extra.append(f"**{ast.unparse(k.value)} not resolved")
            else:
                kwnames += [x for x in info["keys"] if x not in kwnames]
                partial |= not info["complete"]
                extra.append(f"**{name} = {{{', '.join(info['keys'])}}}" + ("" if info["complete"] else " (partly)"))
        callee = s.text()
        try:
            v = evaluate(s)
        except Missing as exc:
            self.rows.append(Row(site, callee, "exists", "FAIL", str(exc)))
            return
        except Unresolved as exc:
            self.rows.append(Row(site, callee, "-", "NOT CHECKED", str(exc)))
            return
        if v.instance_of is not None:  # calling an instance
            try:
                v = Value(obj=getattr(v.instance_of, "__call__"), owner=v.instance_of, desc=v.desc + ".__call__")
            except AttributeError:
                self.rows.append(Row(site, callee, "exists", "FAIL", f"{v.desc} is not callable"))
                return
        result, how, detail = check_call(v, npos, starred, kwnames, partial)
        notes = [x for x in (s.note,) if x] + extra
        if notes:
            detail += " [" + "; ".join(notes) + "]"
        self.rows.append(Row(site, callee, how, result, detail))

    def _dict_info(self, name):
        if name is None:
            return None
        s = self.cur
        while s is not None:
            if name in s.dicts:
                return s.dicts[name]
            if name in s.bindings:
                return None
            s = s.parent
        return None

    def _import_row(self, node, dotted):
        site = f"{self.rel}:{node.lineno}"
        try:
            import_path(dotted)
            self.rows.append(Row(site, dotted, "exists", "OK", "import resolves", kind="import"))
        except Missing as exc:
            self.rows.append(Row(site, dotted, "exists", "FAIL", str(exc), kind="import"))

    def _attr_row(self, dotted, lines):
        where = f"{self.rel}:{lines[0]}" + (f" (+{len(lines) - 1})" if len(lines) > 1 else "")
        try:
            import_path(dotted)
            self.rows.append(Row(where, dotted, "exists", "OK", "attribute resolves", kind="attr", lines=lines))
        except Missing as exc:
            self.rows.append(Row(where, dotted, "exists", "FAIL", str(exc), kind="attr", lines=lines))


# --- the Dask command lines in the repository's shell scripts ---------------------------------

#: Commands whose options the scripts use: words as typed -> (module, click command attribute).
CLI_COMMANDS = {
    "dask cuda worker": ("dask_cuda.cli", "worker"),
    "dask-cuda-worker": ("dask_cuda.cli", "worker"),
    "dask worker": ("distributed.cli.dask_worker", "main"),
    "dask scheduler": ("distributed.cli.dask_scheduler", "main"),
}


def _command_text(text: str, start: int, cmd_start: int) -> str:
    """The words of the command starting at ``start``: up to the end of a bash array it sits in
    (``worker=(dask cuda worker ...)``), else to the end of the line (backslash continuations
    followed) or a ``;``, ``&``, ``|``."""
    line_start = text.rfind("\n", 0, cmd_start) + 1
    in_array = re.search(r"=\(\s*$", text[line_start:cmd_start]) is not None
    depth, i, out = 0, start, []
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text[i + 1 : i + 2] == "\n":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        elif ch == "\n" and not in_array and depth == 0:
            break
        elif ch in ";&|" and not in_array and depth == 0:
            break
        elif ch == "#" and (i == 0 or text[i - 1] in " \t\n"):
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def check_cli(repo: Path, out) -> int:
    """Options of ``dask cuda worker`` / ``dask worker`` / ``dask scheduler`` used in the
    repository's shell scripts, against the installed click commands. Returns the failures."""
    import shlex

    failures = 0
    scripts = sorted(p for pat in ("*.sh", "jobs/*.sh", "benchmarks/*.sh", "scripts/*.sh") for p in repo.glob(pat))
    rows = []
    for path in scripts:
        text = path.read_text(errors="replace")
        for words, (modname, attr) in CLI_COMMANDS.items():
            for m in re.finditer(r"(?<![\w-])" + re.escape(words).replace("\\ ", r"\s+") + r"(?![\w-])", text):
                line = text.count("\n", 0, m.start()) + 1
                if text[text.rfind("\n", 0, m.start()) + 1 : m.start()].lstrip().startswith("#"):
                    continue  # a comment
                try:
                    cmd = getattr(importlib.import_module(modname), attr)
                except Exception as exc:  # noqa: BLE001
                    rows.append((f"{path.relative_to(repo)}:{line}", words, "-", "NOT CHECKED", f"{modname}: {exc}"))
                    continue
                opts = {}
                for prm in cmd.params:
                    for o in list(getattr(prm, "opts", [])) + list(getattr(prm, "secondary_opts", [])):
                        opts[o] = prm
                words_text = _command_text(text, m.end(), m.start())
                # a bash array holding the command (worker=(dask cuda worker ...)) may be extended
                # later in the file (worker+=(--rmm-async ...)): those words belong to it too
                arr = re.search(r"(\w+)=\(\s*$", text[text.rfind("\n", 0, m.start()) + 1 : m.start()])
                if arr:
                    for a in re.finditer(rf"(?<![\w-]){re.escape(arr.group(1))}\+=\(", text[m.end():]):
                        inner = _balanced(text, m.end() + a.end() - 1)
                        if inner is not None:
                            words_text += " " + re.sub(r"#[^\n]*", "", inner)
                try:
                    toks = shlex.split(words_text)
                except ValueError:
                    toks = words_text.split()
                for k, tok in enumerate(toks):
                    if not tok.startswith("--"):
                        continue
                    flag, _, inline = tok.partition("=")
                    site = f"{path.relative_to(repo)}:{line}"
                    prm = opts.get(flag)
                    if prm is None:
                        failures += 1
                        note = " (the command ignores unknown options: it would be silently dropped)" if \
                            getattr(cmd, "context_settings", {}).get("ignore_unknown_options") else ""
                        rows.append((site, f"{words} {flag}", "click options", "FAIL", f"no such option{note}"))
                        continue
                    detail = "option exists"
                    choices = getattr(prm.type, "choices", None)
                    if choices and not getattr(prm, "is_flag", False):
                        value = inline or (toks[k + 1] if k + 1 < len(toks) else "")
                        if "$" in value:
                            detail += f"; value {value} is a variable (not checked)"
                        else:
                            vals = [v.strip() for v in value.split(",")] if "Comma" in type(prm.type).__name__ else [value]
                            bad = [v for v in vals if v not in choices]
                            if bad:
                                failures += 1
                                rows.append((site, f"{words} {flag} {value}", "click choices", "FAIL",
                                             f"{bad} not among {list(choices)}"))
                                continue
                            detail += f"; value {value} among {list(choices)}"
                    rows.append((site, f"{words} {flag}", "click options", "OK", detail))
    if not rows:
        out("  (no Dask command lines found in the repository's shell scripts)")
    for r in rows:
        out(f"  {r[0]:<24} {r[1]:<48} {r[2]:<14} {r[3]:<11} {r[4]}")
    return failures


def dask_cuda_facts(out) -> None:
    """What the installed dask-cuda worker CLI offers for RMM, and whether the GPU packages still
    import ``cuda.core.experimental`` (gone from cuda-core 1.x)."""
    try:
        from dask_cuda.cli import worker
    except Exception as exc:  # noqa: BLE001
        out(f"  dask_cuda.cli does not import: {exc}")
        return
    for prm in worker.params:
        names = list(getattr(prm, "opts", [])) + list(getattr(prm, "secondary_opts", []))
        if any("rmm" in n for n in names):
            choices = getattr(prm.type, "choices", None)
            out(f"  dask cuda worker {'/'.join(names):<44} default={prm.default!r}"
                + (f" choices={list(choices)}" if choices else ""))
    if getattr(worker, "context_settings", {}).get("ignore_unknown_options"):
        out("  note: `dask cuda worker` is declared with ignore_unknown_options: a misspelt option is not an error")
    try:
        cc = md.version("cuda-core")
    except md.PackageNotFoundError:
        cc = "not installed"
    try:
        importlib.import_module("cuda.core.experimental")
        exp = "importable"
    except Exception as exc:  # noqa: BLE001
        exp = f"not importable ({type(exc).__name__})"
    out(f"  cuda-core {cc}: cuda.core.experimental {exp}")
    pat = re.compile(r"^[ \t]*(from\s+cuda\.core\.experimental\b|import\s+cuda\.core\.experimental\b|"
                     r"from\s+cuda\.core\s+import\s+[^#\n]*\bexperimental\b|from\s+cuda\.core\s+import\b)", re.M)
    for modname in ("dask_cuda", "rmm", "cupy", "numba_cuda", "cuml", "cugraph", "pylibcugraph", "cudf", "distributed"):
        spec = importlib.util.find_spec(modname)
        if spec is None or not spec.submodule_search_locations:
            continue
        hits = []
        for root in spec.submodule_search_locations:
            for f in Path(root).rglob("*.py"):
                if "tests" in f.parts:
                    continue
                for mm in pat.finditer(f.read_text(errors="replace")):
                    line = f.read_text(errors="replace").count("\n", 0, mm.start()) + 1
                    src_line = f.read_text(errors="replace").splitlines()[line - 1].strip()
                    hits.append(f"{f.relative_to(Path(root).parent)}:{line}: {src_line}")
        exp_hits = [h for h in hits if "experimental" in h]
        if exp_hits:
            out(f"  {modname} IMPORTS cuda.core.experimental: " + "; ".join(exp_hits[:6]))
        elif hits:
            out(f"  {modname}: no cuda.core.experimental; imports cuda.core {len(hits)}x, e.g. " + "; ".join(hits[:2]))
        else:
            out(f"  {modname}: no import from cuda.core in its Python sources")


# --- module imports, versions, report --------------------------------------------------------

def import_modules(out) -> tuple[int, int]:
    n_ok = n_fail = 0
    for pkg in IMPORT_PACKAGES:
        try:
            mod = importlib.import_module(pkg)
        except ModuleNotFoundError as exc:
            if exc.name == pkg:
                out(f"  {pkg:<44} absent (no such package yet)")
                continue
            out(f"  {pkg:<44} FAIL  {type(exc).__name__}: {exc}")
            n_fail += 1
            continue
        except Exception as exc:  # noqa: BLE001
            out(f"  {pkg:<44} FAIL  {type(exc).__name__}: {exc}")
            n_fail += 1
            continue
        names = [pkg]
        errors: dict = {}

        def onerror(name, errors=errors):
            errors[name] = "".join(traceback.format_exception_only(*sys.exc_info()[:2])).strip()

        if hasattr(mod, "__path__"):  # a package: its modules, found as they are now
            names += [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + ".", onerror=onerror)]
        for name in sorted(set(names) | set(errors)):
            if name in errors:
                out(f"  {name:<44} FAIL  {errors[name]}")
                n_fail += 1
                continue
            try:
                importlib.import_module(name)
                out(f"  {name:<44} ok")
                n_ok += 1
            except Exception as exc:  # noqa: BLE001
                out(f"  {name:<44} FAIL  {type(exc).__name__}: {exc}")
                n_fail += 1
    return n_ok, n_fail


def versions() -> list[str]:
    seen = {}
    for d in md.distributions():
        name = d.metadata.get("Name") or ""
        if DIST_PATTERN.match(name):
            seen[name.lower()] = d.version
    return [f"{k}=={seen[k]}" for k in sorted(seen)]


def gpu_visible() -> str:
    try:
        import cupy

        return f"{cupy.cuda.runtime.getDeviceCount()} CUDA device(s)"
    except Exception as exc:  # noqa: BLE001
        return f"none ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package-dir", default=None, help="the package's source folder (default: the imported one)")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    ap.add_argument("--strict", action="store_true", help="exit 1 on WARN or NOT CHECKED rows too")
    ap.add_argument("--also", nargs="*", default=[], metavar="PATH",
                    help="more .py files or folders to check the same way (e.g. benchmarks/gpu_bench.py)")
    args = ap.parse_args(argv)

    buf = io.StringIO()

    def out(line: str = "") -> None:
        print(line, flush=True)
        buf.write(line + "\n")

    if args.package_dir:
        pkg_dir = Path(args.package_dir).resolve()
        sys.path.insert(0, str(pkg_dir.parent))
    else:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            print(f"{PACKAGE} is not importable; pip install --no-deps -e . or pass --package-dir", file=sys.stderr)
            return 2
        pkg_dir = Path(list(spec.submodule_search_locations)[0]).resolve()

    out(f"# GPU API check: {PACKAGE}'s calls into GPU libraries, against the installed packages")
    out(f"# date (UTC): {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M}")
    out(f"# command: python benchmarks/gpu_api_check.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    out(f"# python {platform.python_version()} on {platform.machine()} {platform.system()}; GPU: {gpu_visible()}")
    if _SIM_WAS not in (None, "", "0"):
        out(f"# NUMBA_ENABLE_CUDASIM={_SIM_WAS} was set; it is switched off here so the real numba.cuda is checked")
    out("# installed: " + ", ".join(versions()))
    try:
        shown = pkg_dir.relative_to(Path.cwd())
    except ValueError:
        shown = pkg_dir
    out(f"# package source: {shown} ({sum(1 for _ in pkg_dir.rglob('*.py'))} .py files)")
    out()
    out("## 1. imports (pkgutil.walk_packages)")
    n_ok, n_import_fail = import_modules(out)
    out()

    used: set = set()
    rows: list[Row] = []
    files = sorted(p for p in pkg_dir.rglob("*.py") if "__pycache__" not in p.parts)
    extra = []
    for a in args.also:
        a = Path(a).resolve()
        extra += sorted(a.rglob("*.py")) if a.is_dir() else [a]
    for p in files + extra:
        try:
            rel = f"{PACKAGE}/{p.relative_to(pkg_dir).as_posix()}"
        except ValueError:
            rel = os.path.relpath(p, pkg_dir.parent)
        try:
            rows += Checker(p, rel, used).run()
        except SyntaxError as exc:
            rows.append(Row(f"{rel}:{exc.lineno}", "-", "ast", "FAIL", f"does not parse: {exc.msg}"))

    calls = [r for r in rows if r.kind == "call"]
    others = [r for r in rows if r.kind != "call"]
    out(f"## 2. calls into GPU libraries ({len(calls)} call sites in {len(files) + len(extra)} files)")
    _table(out, calls)
    out()
    out(f"## 3. imports and attribute references of GPU libraries ({len(others)} rows; an attribute used "
        "several times in a file is one row)")
    _table(out, others)
    out()
    out("## 4. Dask command lines in the repository's shell scripts (click options of the installed CLIs)")
    n_cli_fail = check_cli(pkg_dir.parent, out)
    out()
    out("## 5. dask-cuda worker's RMM options and imports from cuda.core")
    dask_cuda_facts(out)
    out()
    stale = [RECEIVERS[i] for i in range(len(RECEIVERS)) if i not in used]
    if stale:
        out("## receiver-table entries that matched nothing (stale after a rename? update RECEIVERS)")
        for r in stale:
            out(f"  {r[0]} in {r[1] or 'any scope'} -> {r[2]}")
        out()
    count = {k: sum(1 for r in calls if r.result == k) for k in ("OK", "FAIL", "WARN", "NOT CHECKED")}
    ocount = {k: sum(1 for r in others if r.result == k) for k in ("OK", "FAIL")}
    by_method: dict = {}
    for r in calls:
        if r.result in ("OK", "WARN", "FAIL") and r.method != "-":
            key = r.method.split(" ")[0]
            by_method[key] = by_method.get(key, 0) + 1
    out("## summary")
    out(f"modules imported: {n_ok} ok, {n_import_fail} failed")
    out(f"call sites: {len(calls)}: {count['OK']} OK, {count['FAIL']} FAIL, {count['WARN']} WARN, "
        f"{count['NOT CHECKED']} NOT CHECKED")
    out("checked by: " + ", ".join(f"{k} {v}" for k, v in sorted(by_method.items())))
    out(f"imports and attributes: {ocount['OK']} OK, {ocount['FAIL']} FAIL")
    out(f"shell-script Dask options failing: {n_cli_fail}")
    for r in [r for r in rows if r.result in ("FAIL", "WARN", "NOT CHECKED")]:
        out(f"  {r.result:<11} {r.site}  {r.callee}: {r.detail}")
    failed = count["FAIL"] + ocount["FAIL"] + n_import_fail + n_cli_fail
    status = 1 if failed or (args.strict and (count["WARN"] or count["NOT CHECKED"])) else 0
    out(f"exit status: {status}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(buf.getvalue())
    return status


def _table(out, rows: list[Row]) -> None:
    if not rows:
        out("  (none)")
        return
    w_site = max(len(r.site) for r in rows)
    w_callee = min(60, max(len(r.callee) for r in rows))
    w_method = max(len(r.method) for r in rows)
    out(f"  {'site':<{w_site}}  {'callee':<{w_callee}}  {'check':<{w_method}}  result       detail")
    for r in rows:
        out(f"  {r.site:<{w_site}}  {r.callee:<{w_callee}}  {r.method:<{w_method}}  {r.result:<11}  {r.detail}")


if __name__ == "__main__":
    sys.exit(main())
