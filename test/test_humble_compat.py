"""The package against ROS 2 Humble (issue 10), which cannot be installed here.

rclpy: ../shared/compat/rclpy_public_api.json lists the public rclpy API of the humble and jazzy
branches (names only). :class:`RclpyUsageChecker` walks the package's source with ``ast`` and
reports, as ``file:line``, every rclpy name a distribution lacks:

* (a) ``import rclpy.x`` / ``from rclpy.x import Y`` of a module or name that is not there;
* (b) attributes used on rclpy modules (``rclpy.create_node``, ``rclpy.qos.QoSProfile``);
* (c) methods and properties used on rclpy objects whose class the checker can tell: ``self`` (and
  ``super()``) in classes deriving from an rclpy class such as Node or LifecycleNode (names the
  class and its package bases do not define themselves), variables, parameters and attributes
  annotated as one or assigned one (``node: Node``, ``rclpy.create_node(...)``,
  ``SingleThreadedExecutor()``, ``self._timer = self.create_timer(...)``), and what a few calls
  return (``get_logger()``, ``get_clock().now()``, ``rclpy.logging.get_logger(...)``).
* (d) guarded use is allowed, which is what a fallback for an older distribution looks like: a
  name passed as a string constant to ``hasattr(obj, "name")`` or ``getattr(obj, "name", default)``
  in the same function or a scope around it, and code inside ``try`` whose ``except`` catches
  AttributeError (ImportError / ModuleNotFoundError for imports).

NumPy: Humble's apt NumPy is 1.21 (Jazzy's and Kilted's 1.26; the dev environment has 2.x).
:func:`numpy_usage_violations` reports NumPy API newer than 1.21: names on ``np`` / ``numpy``
(``np.trapezoid``, ``np.exceptions``), keyword arguments NumPy functions gained later
(``np.asarray(copy=)``), and a few array / Generator attributes (``.mT``, ``rng.spawn``) on
variables known to hold one. Same guards as above.

Runtime: the parameter callbacks' fallback for an rclpy without post-set callbacks (Humble), over
the real rclpy of this environment with the newer method hidden: on a small node and on the
depth node itself.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "space_clip_ros"
PACKAGE_DIR = REPO_ROOT / PACKAGE
COMPAT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "compat"
RCLPY_API_FILE = COMPAT_DIR / "rclpy_public_api.json"
DISTROS = ("humble", "jazzy")

# ---- what the names-only listing does not say ---------------------------------------------------
#: rclpy base classes of the classes the checker follows (the listing names no bases).
RCLPY_BASES: dict[str, tuple[str, ...]] = {
    "rclpy.lifecycle.node.LifecycleNode": ("rclpy.lifecycle.node.LifecycleNodeMixin", "rclpy.node.Node"),
    "rclpy.lifecycle.node.LifecycleNodeMixin": ("rclpy.lifecycle.managed_entity.ManagedEntity",),
    "rclpy.lifecycle.managed_entity.SimpleManagedEntity": ("rclpy.lifecycle.managed_entity.ManagedEntity",),
    "rclpy.lifecycle.publisher.LifecyclePublisher": (
        "rclpy.lifecycle.managed_entity.SimpleManagedEntity", "rclpy.publisher.Publisher"),
    "rclpy.executors.SingleThreadedExecutor": ("rclpy.executors.Executor",),
    "rclpy.executors.MultiThreadedExecutor": ("rclpy.executors.Executor",),
    "rclpy.clock.ROSClock": ("rclpy.clock.Clock",),
    "rclpy.task.Task": ("rclpy.task.Future",),
}
#: Names a module re-exports under another name (rclpy/lifecycle/__init__.py: ``Node = LifecycleNode``).
RCLPY_CLASS_ALIASES: dict[str, str] = {
    "rclpy.lifecycle.Node": "rclpy.lifecycle.node.LifecycleNode",
    "rclpy.lifecycle.NodeMixin": "rclpy.lifecycle.node.LifecycleNodeMixin",
    "rclpy.lifecycle.Publisher": "rclpy.lifecycle.publisher.LifecyclePublisher",
}
#: Classes of what methods return: (class, method) -> class.
RCLPY_METHOD_RETURNS: dict[tuple[str, str], str] = {
    ("rclpy.node.Node", "get_logger"): "rclpy.impl.rcutils_logger.RcutilsLogger",
    ("rclpy.node.Node", "get_clock"): "rclpy.clock.Clock",
    ("rclpy.node.Node", "create_publisher"): "rclpy.publisher.Publisher",
    ("rclpy.node.Node", "create_subscription"): "rclpy.subscription.Subscription",
    ("rclpy.node.Node", "create_timer"): "rclpy.timer.Timer",
    ("rclpy.node.Node", "create_rate"): "rclpy.timer.Rate",
    ("rclpy.node.Node", "create_client"): "rclpy.client.Client",
    ("rclpy.node.Node", "create_service"): "rclpy.service.Service",
    ("rclpy.node.Node", "create_guard_condition"): "rclpy.guard_condition.GuardCondition",
    ("rclpy.lifecycle.node.LifecycleNodeMixin", "create_lifecycle_publisher"):
        "rclpy.lifecycle.publisher.LifecyclePublisher",
    ("rclpy.impl.rcutils_logger.RcutilsLogger", "get_child"): "rclpy.impl.rcutils_logger.RcutilsLogger",
    ("rclpy.clock.Clock", "now"): "rclpy.time.Time",
    ("rclpy.client.Client", "call_async"): "rclpy.task.Future",
    ("rclpy.executors.Executor", "create_task"): "rclpy.task.Task",
}
#: Classes of properties: (class, property) -> class.
RCLPY_PROPERTY_TYPES: dict[tuple[str, str], str] = {
    ("rclpy.node.Node", "context"): "rclpy.context.Context",
    ("rclpy.node.Node", "executor"): "rclpy.executors.Executor",
    ("rclpy.executors.Executor", "context"): "rclpy.context.Context",
}
#: Classes of what functions return, by the name they are used under.
RCLPY_FUNCTION_RETURNS: dict[str, str] = {
    "rclpy.create_node": "rclpy.node.Node",
    "rclpy.get_global_executor": "rclpy.executors.Executor",
    "rclpy.get_default_context": "rclpy.context.Context",
    "rclpy.utilities.get_default_context": "rclpy.context.Context",
    "rclpy.logging.get_logger": "rclpy.impl.rcutils_logger.RcutilsLogger",
}
#: Bases that add no attributes a check must know of.
NEUTRAL_BASES = {"object", "Generic", "Protocol", "ABC"}

ATTRIBUTE_GUARD_EXCEPTIONS = {"AttributeError"}
IMPORT_GUARD_EXCEPTIONS = {"ImportError", "ModuleNotFoundError"}


# ---- what the checks report ---------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    name: str  # the missing name, e.g. "rclpy.node.Node.add_post_set_parameters_callback"
    detail: str  # where / how it was used

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name} ({self.detail})"


# ---- scopes and guards, shared by both checks ---------------------------------------------------
ScopeNode = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
_SCOPE_TYPES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_FUNCTION_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _own_nodes(scope: ScopeNode) -> Iterator[ast.AST]:
    """The nodes of a scope's own code: not those of functions or classes defined inside it.

    Default values, decorators and annotations belong to the scope around a definition.
    """
    if isinstance(scope, ast.Lambda):
        stack: list[ast.AST] = [scope.body]
    else:
        stack = list(scope.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stack.extend(node.decorator_list + node.args.defaults
                         + [d for d in node.args.kw_defaults if d is not None])
            if node.returns is not None:
                stack.append(node.returns)
        elif isinstance(node, ast.Lambda):
            stack.extend(node.args.defaults + [d for d in node.args.kw_defaults if d is not None])
        elif isinstance(node, ast.ClassDef):
            stack.extend(node.decorator_list + node.bases + [k.value for k in node.keywords])
        else:
            stack.extend(ast.iter_child_nodes(node))


def _guard_names(scope: ScopeNode) -> set[str]:
    """Names passed as string constants to hasattr(x, "n") / getattr(x, "n", default) in a scope."""
    names = set()
    for node in _own_nodes(scope):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and ((node.func.id == "hasattr" and len(node.args) == 2)
                     or (node.func.id == "getattr" and len(node.args) == 3))
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            names.add(node.args[1].value)
    return names


def _caught_names(handler: ast.ExceptHandler) -> set[str]:
    if handler.type is None:
        return set()  # a bare except is no guard: it hides every mistake
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {k.id if isinstance(k, ast.Name) else k.attr for k in kinds if isinstance(k, (ast.Name, ast.Attribute))}


@dataclass
class WalkContext:
    """Where a node sits: its innermost scope, the guard names around it, what a try around it catches."""

    scope: ScopeNode
    guards: frozenset[str]
    caught: frozenset[str]
    class_stack: tuple[ast.ClassDef, ...]

    def guarded(self, name: str, exceptions: set[str]) -> bool:
        return name in self.guards or bool(self.caught & exceptions)


def walk_with_context(tree: ast.Module) -> Iterator[tuple[ast.AST, WalkContext]]:
    """Every node of ``tree`` with its :class:`WalkContext` (guards of all scopes around count)."""

    def visit(node: ast.AST, ctx: WalkContext) -> Iterator[tuple[ast.AST, WalkContext]]:
        yield node, ctx
        if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            caught = set().union(*(_caught_names(h) for h in node.handlers))
            body_ctx = WalkContext(ctx.scope, ctx.guards, ctx.caught | caught, ctx.class_stack)
            for child in node.body:
                yield from visit(child, body_ctx)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                yield from visit(child, ctx)
            return
        if isinstance(node, _SCOPE_TYPES) and node is not ctx.scope:
            # What belongs to the scope around the definition (defaults, decorators, bases) first.
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                outer = node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d]
                outer += [node.returns] if node.returns is not None else []
                outer += [a.annotation for a in _all_args(node.args) if a.annotation is not None]
            elif isinstance(node, ast.Lambda):
                outer = node.args.defaults + [d for d in node.args.kw_defaults if d]
            else:
                outer = node.decorator_list + node.bases + [k.value for k in node.keywords]
            for child in outer:
                yield from visit(child, ctx)
            classes = ctx.class_stack + ((node,) if isinstance(node, ast.ClassDef) else ())
            inner = WalkContext(node, ctx.guards | frozenset(_guard_names(node)), frozenset(), classes)
            for child in ([node.body] if isinstance(node, ast.Lambda) else node.body):
                yield from visit(child, inner)
            return
        for child in ast.iter_child_nodes(node):
            yield from visit(child, ctx)

    root = WalkContext(tree, frozenset(_guard_names(tree)), frozenset(), ())
    for child in tree.body:
        yield from visit(child, root)


def _all_args(args: ast.arguments) -> list[ast.arg]:
    every = args.posonlyargs + args.args + args.kwonlyargs
    return every + [a for a in (args.vararg, args.kwarg) if a is not None]


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _relative_path(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _module_name(path: Path, package_dir: Path) -> str:
    relative = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute_module(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def package_sources(package_dir: Path = PACKAGE_DIR) -> list[tuple[Path, str, str]]:
    """(path, module name, source) of every Python file of the package."""
    return [(p, _module_name(p, package_dir), p.read_text(encoding="utf-8"))
            for p in sorted(package_dir.rglob("*.py"))]


# ---- the rclpy API of one distribution ----------------------------------------------------------
class RclpyApi:
    def __init__(self, distro: str, modules: dict[str, dict[str, Any]]) -> None:
        self.distro = distro
        self.modules = modules

    def has_module(self, name: str) -> bool:
        return name in self.modules

    def module_has(self, module: str, name: str) -> bool:
        entry = self.modules.get(module, {})
        return (self.has_module(f"{module}.{name}")
                or any(name in entry.get(key, ()) for key in ("functions", "classes", "imported", "names")))

    def resolve_class(self, module: str, name: str) -> str | None:
        """The defining module's class for ``module.name``, or None when it is no (known) class."""
        alias = RCLPY_CLASS_ALIASES.get(f"{module}.{name}")
        if alias is not None:
            return alias
        entry = self.modules.get(module, {})
        if name in entry.get("classes", {}):
            return f"{module}.{name}"
        if name in entry.get("imported", ()) or name in entry.get("names", ()):
            owners = [m for m, e in self.modules.items() if name in e.get("classes", {})]
            if len(owners) == 1:
                return f"{owners[0]}.{name}"
        return None

    def is_function(self, module: str, name: str) -> bool:
        entry = self.modules.get(module, {})
        return name in entry.get("functions", ()) or (
            name in entry.get("imported", ()) and self.resolve_class(module, name) is None)

    def knows_class(self, qualname: str) -> bool:
        module, _, name = qualname.rpartition(".")
        return name in self.modules.get(module, {}).get("classes", {})

    def lineage(self, qualname: str) -> list[str]:
        """The class and its rclpy bases, nearest first."""
        result = [qualname]
        for base in RCLPY_BASES.get(qualname, ()):
            result += [c for c in self.lineage(base) if c not in result]
        return result

    def members(self, qualname: str) -> set[str]:
        result: set[str] = set()
        for cls in self.lineage(qualname):
            module, _, name = cls.rpartition(".")
            result.update(self.modules.get(module, {}).get("classes", {}).get(name, ()))
        return result


# ---- types the rclpy checker follows ------------------------------------------------------------
@dataclass(frozen=True)
class RModule:  # an rclpy module
    name: str


@dataclass(frozen=True)
class RClass:  # an rclpy class itself
    name: str


@dataclass(frozen=True)
class RInstance:  # an object of an rclpy class
    name: str


@dataclass(frozen=True)
class RFunction:  # an rclpy function, by the name it is used under
    name: str


@dataclass(frozen=True)
class RMethod:  # a method of an rclpy object
    owner: str
    name: str


@dataclass(frozen=True)
class PClass:  # a class of the package
    name: str


@dataclass(frozen=True)
class PInstance:  # an object of a class of the package
    name: str


@dataclass(frozen=True)
class Returning:  # a callable (Callable[..., T]) returning ``result``
    result: Any


@dataclass(frozen=True)
class BoundTypeVar:  # TypeVar("T", bound=X)
    bound: ast.expr
    module: str


@dataclass
class ProjectClass:
    qualname: str
    module: str
    node: ast.ClassDef
    own_names: set[str] = field(default_factory=set)
    # self.X = value / self.X: annotation, with the method the assignment is in
    attribute_sources: dict[str, list[tuple[str, ast.expr, ScopeNode]]] = field(default_factory=dict)


_UNKNOWN = object()


class RclpyUsageChecker:
    """Checks rclpy usage of a set of modules against one distribution's :class:`RclpyApi`."""

    def __init__(self, api: RclpyApi, sources: list[tuple[Path, str, str]]) -> None:
        self.api = api
        self.trees: dict[str, tuple[Path, ast.Module, bool]] = {}
        for path, module, source in sources:
            self.trees[module] = (path, ast.parse(source, filename=str(path)), path.name == "__init__.py")
        self.classes: dict[str, ProjectClass] = {}
        self.scope_parent: dict[int, ScopeNode] = {}
        self.scope_module: dict[int, str] = {}
        self.scope_class: dict[int, ast.ClassDef] = {}  # method -> its class
        self.class_qualname: dict[int, str] = {}
        self._bindings: dict[int, dict[str, list[tuple[str, Any]]]] = {}
        self._memo: dict[tuple[int, str], Any] = {}
        self._busy: set[tuple[int, str]] = set()
        for module, (_, tree, _) in self.trees.items():
            self._index_scopes(tree, None, module)
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    self._index_class(node, module)

    # -- indexing -----------------------------------------------------------------------------------
    def _index_scopes(self, scope: ScopeNode, parent: ScopeNode | None, module: str) -> None:
        if parent is not None:
            self.scope_parent[id(scope)] = parent
        self.scope_module[id(scope)] = module
        for node in _own_nodes(scope):
            if isinstance(node, _SCOPE_TYPES):
                if isinstance(scope, ast.ClassDef) and isinstance(node, _FUNCTION_TYPES):
                    self.scope_class[id(node)] = scope
                    # Names of a class body are not visible in its methods.
                    self._index_scopes(node, self.scope_parent.get(id(scope), scope), module)
                else:
                    self._index_scopes(node, scope, module)

    def _index_class(self, node: ast.ClassDef, module: str) -> None:
        info = ProjectClass(f"{module}.{node.name}", module, node)
        self.class_qualname[id(node)] = info.qualname
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                info.own_names.add(item.name)
            elif isinstance(item, ast.Assign):
                for target in item.targets:
                    info.own_names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                info.own_names.add(item.target.id)
        for method in node.body:
            if not isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)) or not _all_args(method.args):
                continue
            me = method.args.posonlyargs + method.args.args
            if not me:
                continue
            me_name = me[0].arg
            for sub, scope in self._nodes_with_scope(method):
                if isinstance(sub, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                    targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                    for target in targets:
                        pairs = self._pairs(target, sub.value if not isinstance(sub, ast.AugAssign) else None)
                        for t, value in pairs:
                            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == me_name:
                                info.own_names.add(t.attr)
                                sources = info.attribute_sources.setdefault(t.attr, [])
                                if isinstance(sub, ast.AnnAssign):
                                    sources.append(("annotation", sub.annotation, scope))
                                elif value is not None:
                                    sources.append(("value", value, scope))
                                else:
                                    sources.append(("unknown", t, scope))
                elif (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "setattr"
                      and len(sub.args) >= 2 and isinstance(sub.args[1], ast.Constant)):
                    info.own_names.add(str(sub.args[1].value))
        self.classes[info.qualname] = info

    @staticmethod
    def _nodes_with_scope(method: ScopeNode) -> Iterator[tuple[ast.AST, ScopeNode]]:
        """Every node of a method with the innermost function it is in."""
        stack: list[tuple[ast.AST, ScopeNode]] = [(method, method)]
        while stack:
            node, scope = stack.pop()
            yield node, scope
            for child in ast.iter_child_nodes(node):
                stack.append((child, child if isinstance(child, _FUNCTION_TYPES) else scope))

    @staticmethod
    def _pairs(target: ast.expr, value: ast.expr | None) -> list[tuple[ast.expr, ast.expr | None]]:
        if isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts) and not any(
                    isinstance(e, ast.Starred) for e in target.elts):
                return [p for t, v in zip(target.elts, value.elts) for p in RclpyUsageChecker._pairs(t, v)]
            return [p for t in target.elts for p in RclpyUsageChecker._pairs(t, None)]
        if isinstance(target, ast.Starred):
            return RclpyUsageChecker._pairs(target.value, None)
        return [(target, value)]

    # -- name bindings of a scope -------------------------------------------------------------------
    def _scope_bindings(self, scope: ScopeNode) -> dict[str, list[tuple[str, Any]]]:
        key = id(scope)
        if key in self._bindings:
            return self._bindings[key]
        bindings: dict[str, list[tuple[str, Any]]] = {}
        module = self.scope_module[key]

        def bind(name: str, kind: str, payload: Any) -> None:
            bindings.setdefault(name, []).append((kind, payload))

        if isinstance(scope, _FUNCTION_TYPES):
            arguments = _all_args(scope.args)
            positional = scope.args.posonlyargs + scope.args.args
            cls = self.scope_class.get(key)
            decorators = set() if isinstance(scope, ast.Lambda) else {_dotted(d) for d in scope.decorator_list}
            for arg in arguments:
                if cls is not None and positional and arg is positional[0] and "staticmethod" not in decorators:
                    qualname = self.class_qualname.get(id(cls))
                    kind = PClass if "classmethod" in decorators else PInstance
                    bind(arg.arg, "type", kind(qualname) if qualname else None)
                elif arg.annotation is not None:
                    bind(arg.arg, "annotation", arg.annotation)
                else:
                    bind(arg.arg, "type", None)
        for node in _own_nodes(scope):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        bind(alias.asname, "type", self._module_type(alias.name))
                    else:
                        top = alias.name.split(".")[0]
                        bind(top, "type", self._module_type(top))
            elif isinstance(node, ast.ImportFrom):
                _, is_package = self.trees.get(module, (None, None, False))[1:]
                source = _absolute_module(module, bool(is_package), node)
                for alias in node.names:
                    bind(alias.asname or alias.name, "type", self._imported_type(source, alias.name))
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for t, value in self._pairs(target, node.value):
                        if isinstance(t, ast.Name):
                            if isinstance(node, ast.AnnAssign):
                                bind(t.id, "annotation", node.annotation)
                            elif value is not None:
                                bind(t.id, "value", value)
                            else:
                                bind(t.id, "type", None)
            elif isinstance(node, (ast.AugAssign, ast.For, ast.AsyncFor, ast.comprehension)):
                for n in ast.walk(node.target):
                    if isinstance(n, ast.Name):
                        bind(n.id, "type", None)
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                for n in ast.walk(node.optional_vars):
                    if isinstance(n, ast.Name):
                        bind(n.id, "type", None)
            elif isinstance(node, (ast.ExceptHandler, ast.FunctionDef, ast.AsyncFunctionDef)) and node.name:
                bind(node.name, "type", None)
            elif isinstance(node, ast.ClassDef):
                qualname = self.class_qualname.get(id(node))
                bind(node.name, "type", PClass(qualname) if qualname else None)
        self._bindings[key] = bindings
        return bindings

    def _module_type(self, name: str) -> Any:
        return RModule(name) if name.split(".")[0] == "rclpy" else None

    def _imported_type(self, source: str, name: str) -> Any:
        if source.split(".")[0] == "rclpy":
            return self._attribute_of_module(source, name)
        if f"{source}.{name}" in self.classes:
            return PClass(f"{source}.{name}")
        if source in self.trees:  # a name another module of the package imports or defines
            _, tree, _ = self.trees[source]
            return self.lookup(tree, name)
        return None

    def _attribute_of_module(self, module: str, name: str) -> Any:
        if self.api.has_module(f"{module}.{name}"):
            return RModule(f"{module}.{name}")
        cls = self.api.resolve_class(module, name)
        if cls is not None:
            return RClass(cls)
        if self.api.is_function(module, name) or f"{module}.{name}" in RCLPY_FUNCTION_RETURNS:
            return RFunction(f"{module}.{name}")
        return None

    # -- types of names and expressions -------------------------------------------------------------
    def lookup(self, scope: ScopeNode, name: str) -> Any:
        current: ScopeNode | None = scope
        while current is not None:
            bindings = self._scope_bindings(current)
            if name in bindings:
                return self._binding_type(current, name, bindings[name])
            current = self.scope_parent.get(id(current))
        return None

    def _binding_type(self, scope: ScopeNode, name: str, entries: list[tuple[str, Any]]) -> Any:
        key = (id(scope), name)
        if key in self._memo:
            return self._memo[key]
        if key in self._busy:
            return None
        self._busy.add(key)
        try:
            types = set()
            for kind, payload in entries:
                if kind == "type":
                    types.add(payload)
                elif kind == "annotation":
                    types.add(self.annotation_type(payload, scope))
                else:
                    value_type = self.type_of(payload, scope)
                    if value_type is None and isinstance(payload, ast.Call) and _dotted(payload.func) == "TypeVar":
                        bound = next((k.value for k in payload.keywords if k.arg == "bound"), None)
                        value_type = BoundTypeVar(bound, self.scope_module[id(scope)]) if bound is not None else None
                    types.add(value_type)
            result = types.pop() if len(types) == 1 else None  # different types: unknown
        finally:
            self._busy.discard(key)
        self._memo[key] = result
        return result

    def annotation_type(self, annotation: ast.expr | None, scope: ScopeNode) -> Any:
        if annotation is None:
            return None
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            try:
                return self.annotation_type(ast.parse(annotation.value, mode="eval").body, scope)
            except SyntaxError:
                return None
        if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
            sides = [self.annotation_type(s, scope) for s in (annotation.left, annotation.right)]
            none = [isinstance(s, ast.Constant) and s.value is None for s in (annotation.left, annotation.right)]
            if none[0] != none[1]:
                return sides[1] if none[0] else sides[0]
            return None
        if isinstance(annotation, ast.Subscript):
            head = (_dotted(annotation.value) or "").split(".")[-1]
            if head == "Optional":
                return self.annotation_type(annotation.slice, scope)
            if head == "Callable" and isinstance(annotation.slice, ast.Tuple) and len(annotation.slice.elts) == 2:
                result = self.annotation_type(annotation.slice.elts[1], scope)
                return Returning(result) if result is not None else None
            return None
        named = self.type_of(annotation, scope)
        if isinstance(named, RClass):
            return RInstance(named.name)
        if isinstance(named, PClass):
            return PInstance(named.name)
        if isinstance(named, BoundTypeVar):
            _, tree, _ = self.trees[named.module]
            return self.annotation_type(named.bound, tree)
        return None

    def type_of(self, expr: ast.expr, scope: ScopeNode) -> Any:
        if isinstance(expr, ast.Name):
            return self.lookup(scope, expr.id)
        if isinstance(expr, ast.Attribute):
            return self._attribute_type(self.type_of(expr.value, scope), expr.attr)
        if isinstance(expr, ast.Call):
            if isinstance(expr.func, ast.Name) and expr.func.id == "super" and not expr.args:
                cls = self._class_of(scope)
                return PInstance(self.class_qualname[id(cls)]) if cls is not None else None
            called = self.type_of(expr.func, scope)
            if isinstance(called, RClass):
                return RInstance(called.name)
            if isinstance(called, PClass):
                return PInstance(called.name)
            if isinstance(called, RFunction):
                result = RCLPY_FUNCTION_RETURNS.get(called.name)
                return RInstance(result) if result else None
            if isinstance(called, RMethod):
                for cls in self.api.lineage(called.owner):
                    if (cls, called.name) in RCLPY_METHOD_RETURNS:
                        return RInstance(RCLPY_METHOD_RETURNS[(cls, called.name)])
                return None
            if isinstance(called, Returning):
                return called.result
        return None

    def _class_of(self, scope: ScopeNode) -> ast.ClassDef | None:
        current: ScopeNode | None = scope
        while current is not None:
            cls = self.scope_class.get(id(current))
            if cls is not None and id(cls) in self.class_qualname:
                return cls
            current = self.scope_parent.get(id(current))
        return None

    def _attribute_type(self, base: Any, attr: str) -> Any:
        if isinstance(base, RModule):
            return self._attribute_of_module(base.name, attr)
        if isinstance(base, RInstance):
            for cls in self.api.lineage(base.name):
                if (cls, attr) in RCLPY_PROPERTY_TYPES:
                    return RInstance(RCLPY_PROPERTY_TYPES[(cls, attr)])
            return RMethod(base.name, attr)
        if isinstance(base, PInstance):
            for info in self.project_lineage(base.name):
                if attr in info.own_names:
                    sources = info.attribute_sources.get(attr)
                    if not sources:
                        return None
                    types = set()
                    for kind, expr, scope in sources:
                        if kind == "annotation":
                            types.add(self.annotation_type(expr, scope))
                        elif kind == "value":
                            key = (id(expr), "<attribute>")
                            if key in self._busy:
                                types.add(None)
                                continue
                            self._busy.add(key)
                            try:
                                types.add(self.type_of(expr, scope))
                            finally:
                                self._busy.discard(key)
                        else:
                            types.add(None)
                    return types.pop() if len(types) == 1 else None
            for rclpy_base in self.rclpy_bases(base.name):
                found = self._attribute_type(RInstance(rclpy_base), attr)
                if found is not None:
                    return found
        return None

    # -- classes of the package ---------------------------------------------------------------------
    def _bases(self, qualname: str) -> list[Any]:
        info = self.classes[qualname]
        _, tree, _ = self.trees[info.module]
        result = []
        for base in info.node.bases:
            head = base.value if isinstance(base, ast.Subscript) else base
            name = (_dotted(head) or "").split(".")[-1]
            found = self.type_of(head, tree)
            if isinstance(found, (RClass, PClass)):
                result.append(found)
            elif name in NEUTRAL_BASES:
                continue
            else:
                result.append(_UNKNOWN)
        return result

    def project_lineage(self, qualname: str) -> list[ProjectClass]:
        result = [self.classes[qualname]] if qualname in self.classes else []
        for base in (self._bases(qualname) if result else []):
            if isinstance(base, PClass) and base.name in self.classes:
                result += [c for c in self.project_lineage(base.name) if c not in result]
        return result

    def rclpy_bases(self, qualname: str) -> list[str]:
        result: list[str] = []
        for info in self.project_lineage(qualname):
            result += [b.name for b in self._bases(info.qualname) if isinstance(b, RClass) and b.name not in result]
        return result

    def _opaque(self, qualname: str) -> bool:
        """Whether some base is neither rclpy's nor the package's (then its names are unknown)."""
        return any(b is _UNKNOWN for info in self.project_lineage(qualname) for b in self._bases(info.qualname))

    # -- the check ----------------------------------------------------------------------------------
    def violations(self) -> list[Violation]:
        found: list[Violation] = []
        for module, (path, tree, is_package) in self.trees.items():
            found += self._module_violations(_relative_path(path), module, tree, is_package)
        return sorted(set(found))

    def _module_violations(self, path: str, module: str, tree: ast.Module, is_package: bool) -> list[Violation]:
        distro = self.api.distro
        found = []
        for node, ctx in walk_with_context(tree):
            if isinstance(node, ast.Import):
                if ctx.guarded("", IMPORT_GUARD_EXCEPTIONS):
                    continue
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] != "rclpy":
                        continue
                    for i in range(2, len(parts) + 1):
                        if not self.api.has_module(".".join(parts[:i])):
                            found.append(Violation(path, node.lineno, ".".join(parts[:i]),
                                                   f"imported; no such module in {distro}'s rclpy"))
                            break
            elif isinstance(node, ast.ImportFrom):
                source = _absolute_module(module, is_package, node)
                if source.split(".")[0] != "rclpy" or ctx.guarded("", IMPORT_GUARD_EXCEPTIONS):
                    continue
                if not self.api.has_module(source):
                    found.append(Violation(path, node.lineno, source,
                                           f"imported from; no such module in {distro}'s rclpy"))
                    continue
                for alias in node.names:
                    if alias.name != "*" and not self.api.module_has(source, alias.name):
                        found.append(Violation(path, node.lineno, f"{source}.{alias.name}",
                                               f"imported; not in {distro}'s {source}"))
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                violation = self._attribute_violation(path, node, ctx)
                if violation is not None:
                    found.append(violation)
        return found

    def _attribute_violation(self, path: str, node: ast.Attribute, ctx: WalkContext) -> Violation | None:
        attr = node.attr
        if attr.startswith("__") and attr.endswith("__"):
            return None
        base = self.type_of(node.value, ctx.scope)
        distro = self.api.distro
        used = f"{ast.unparse(node.value)}.{attr}"
        missing = None
        if isinstance(base, RModule):
            if not self.api.module_has(base.name, attr):
                missing = (f"{base.name}.{attr}", f"{used}; not in {distro}'s {base.name}")
        elif isinstance(base, RInstance):
            if self.api.knows_class(base.name) and attr not in self.api.members(base.name):
                short = base.name.rpartition(".")[2]
                missing = (f"{base.name}.{attr}", f"{used}; {distro}'s {short} has no {attr}")
        elif isinstance(base, PInstance) and base.name in self.classes:
            rclpy_bases = self.rclpy_bases(base.name)
            own = set().union(*(c.own_names for c in self.project_lineage(base.name)))
            if (rclpy_bases and not self._opaque(base.name) and attr not in own
                    and all(self.api.knows_class(b) for b in rclpy_bases)
                    and not any(attr in self.api.members(b) for b in rclpy_bases)):
                short = ", ".join(b.rpartition(".")[2] for b in rclpy_bases)
                missing = (f"{rclpy_bases[0]}.{attr}",
                           f"{used} in {base.name.rpartition('.')[2]}; neither the class nor {distro}'s {short} "
                           "defines it")
        if missing is None or ctx.guarded(attr, ATTRIBUTE_GUARD_EXCEPTIONS):
            return None
        return Violation(path, node.lineno, *missing)


def rclpy_usage_violations(api: RclpyApi, sources: list[tuple[Path, str, str]]) -> list[Violation]:
    return RclpyUsageChecker(api, sources).violations()


# ---- NumPy newer than 1.21 ----------------------------------------------------------------------
#: Names on ``numpy`` that NumPy 1.21 lacks (relative to ``numpy``), with the version they came in.
NUMPY_AFTER_1_21: dict[str, str] = {
    **{name: "2.0" for name in (
        "astype", "trapezoid", "concat", "isdtype", "permute_dims", "matrix_transpose", "vecdot", "pow",
        "acos", "acosh", "asin", "asinh", "atan", "atanh", "atan2", "bitwise_left_shift", "bitwise_right_shift",
        "bitwise_invert", "unique_values", "unique_counts", "unique_inverse", "unique_all", "long", "ulong",
        "strings", "linalg.matrix_transpose", "linalg.vecdot", "linalg.vector_norm", "linalg.matrix_norm",
        "linalg.diagonal", "linalg.trace", "linalg.outer", "linalg.cross", "linalg.svdvals", "linalg.tensordot",
        "linalg.matmul", "lib.array_utils", "lib.introspect", "ndarray.mT", "ndarray.device",
        "ndarray.to_device", "ndarray.__array_namespace__",
        # np.bool: in 1.21 a deprecated alias of the builtin, gone in 1.24 (Jazzy's 1.26), back in 2.0.
        "bool",
    )},
    **{name: "2.1" for name in ("unstack", "cumulative_sum", "cumulative_prod")},
    **{name: "2.2" for name in ("matvec", "vecmat")},
    **{name: "1.25" for name in ("exceptions", "dtypes", "random.Generator.spawn", "random.BitGenerator.spawn")},
    **{name: "1.24" for name in ("show_runtime",)},
    **{name: "1.22" for name in ("from_dlpack", "array_api")},
}
#: Keyword arguments of NumPy functions that NumPy 1.21 lacks: function -> {keyword: version}.
NUMPY_KEYWORDS_AFTER_1_21: dict[str, dict[str, str]] = {
    "asarray": {"copy": "2.0", "device": "2.0"},
    "asanyarray": {"copy": "2.1", "device": "2.1"},
    "array": {"device": "2.0", "ndmax": "2.4"},
    "reshape": {"shape": "2.1", "copy": "2.1"},
    "sort": {"stable": "2.0"},
    "argsort": {"stable": "2.0"},
    "clip": {"min": "2.1", "max": "2.1"},
    "unique": {"equal_nan": "1.24", "sorted": "2.3"},
    "isin": {"kind": "1.24"},
    "in1d": {"kind": "1.24"},
    "stack": {"dtype": "1.24", "casting": "1.24"},
    "vstack": {"dtype": "1.24", "casting": "1.24"},
    "hstack": {"dtype": "1.24", "casting": "1.24"},
    "percentile": {"method": "1.22", "weights": "2.0"},
    "quantile": {"method": "1.22", "weights": "2.0"},
    "nanpercentile": {"method": "1.22", "weights": "2.0"},
    "nanquantile": {"method": "1.22", "weights": "2.0"},
    "loadtxt": {"quotechar": "1.23"},
    **{f: {"device": "2.0"} for f in ("zeros", "ones", "empty", "full", "arange", "linspace", "eye",
                                       "zeros_like", "ones_like", "empty_like", "full_like")},
}
#: Attributes of objects known to be an ndarray / a random Generator that NumPy 1.21 lacks.
NUMPY_ARRAY_ATTRIBUTES_AFTER_1_21 = {"mT": "2.0", "device": "2.0", "to_device": "2.0",
                                    "__array_namespace__": "2.0"}
NUMPY_ARRAY_METHOD_KEYWORDS_AFTER_1_21 = {"reshape": {"copy": "2.1"}, "sort": {"stable": "2.0"},
                                          "argsort": {"stable": "2.0"}, "astype": {"device": "2.0"}}
NUMPY_GENERATOR_ATTRIBUTES_AFTER_1_21 = {"spawn": "1.25"}
#: numpy functions that return something other than an ndarray (for the ndarray tracking).
_NUMPY_NON_ARRAY_RESULTS = {"dtype", "errstate", "printoptions", "issubdtype", "isscalar", "ndim", "shape",
                            "size", "result_type", "promote_types", "can_cast", "iinfo", "finfo", "save",
                            "savez", "savetxt", "copyto", "set_printoptions", "seterr",
                            "array_equal", "allclose", "isclose", "any", "all"}


def numpy_usage_violations(sources: list[tuple[Path, str, str]]) -> list[Violation]:
    found: list[Violation] = []
    for path, _, source in sources:
        found += _numpy_module_violations(_relative_path(path), ast.parse(source, filename=str(path)))
    return sorted(set(found))


def _numpy_module_violations(path: str, tree: ast.Module) -> list[Violation]:
    aliases: dict[str, str] = {}  # local name -> "numpy" / "numpy.linalg" / "numpy.random.Generator"
    found = []
    for node, ctx in walk_with_context(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "numpy":
                    aliases[alias.asname or "numpy"] = alias.name if alias.asname else "numpy"
                    relative = alias.name.partition(".")[2]
                    if relative in NUMPY_AFTER_1_21 and not ctx.guarded("", IMPORT_GUARD_EXCEPTIONS):
                        found.append(_numpy_violation(path, node.lineno, relative, "imported"))
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "numpy":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                aliases[alias.asname or alias.name] = full
                relative = full.partition(".")[2]
                hit = next((r for r in _prefixes(relative) if r in NUMPY_AFTER_1_21), None)
                if hit and not ctx.guarded(alias.name, IMPORT_GUARD_EXCEPTIONS | ATTRIBUTE_GUARD_EXCEPTIONS):
                    found.append(_numpy_violation(path, node.lineno, hit, "imported"))
    # Attribute chains and calls on numpy names; attributes of variables holding arrays / generators.
    kinds_by_scope: dict[int, dict[str, str | None]] = {}
    for node, ctx in walk_with_context(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            full = _numpy_name(node, aliases)
            if full is not None:
                relative = full.partition(".")[2]
                if relative in NUMPY_AFTER_1_21 and not ctx.guarded(node.attr, ATTRIBUTE_GUARD_EXCEPTIONS):
                    found.append(_numpy_violation(path, node.lineno, relative, f"{ast.unparse(node)}"))
                continue
            kind = _numpy_kind(node.value, ctx.scope, aliases, kinds_by_scope)
            table = {"ndarray": NUMPY_ARRAY_ATTRIBUTES_AFTER_1_21,
                     "generator": NUMPY_GENERATOR_ATTRIBUTES_AFTER_1_21}.get(kind or "", {})
            if node.attr in table and not ctx.guarded(node.attr, ATTRIBUTE_GUARD_EXCEPTIONS):
                owner = "ndarray" if kind == "ndarray" else "random.Generator"
                found.append(Violation(path, node.lineno, f"numpy.{owner}.{node.attr}",
                                       f"{ast.unparse(node)}; NumPy {table[node.attr]}, Humble has 1.21"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            full = _numpy_name(node.func, aliases)
            if full is not None:
                keywords = NUMPY_KEYWORDS_AFTER_1_21.get(full.partition(".")[2], {})
                what = full
            elif _numpy_kind(node.func.value, ctx.scope, aliases, kinds_by_scope) == "ndarray":
                keywords = NUMPY_ARRAY_METHOD_KEYWORDS_AFTER_1_21.get(node.func.attr, {})
                what = f"numpy.ndarray.{node.func.attr}"
            else:
                continue
            for keyword in node.keywords:
                if keyword.arg in keywords:
                    found.append(Violation(path, node.lineno, f"{what}({keyword.arg}=)",
                                           f"{ast.unparse(node.func)}(..., {keyword.arg}=...); NumPy "
                                           f"{keywords[keyword.arg]}, Humble has 1.21"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in aliases:
            full = aliases[node.func.id]
            keywords = NUMPY_KEYWORDS_AFTER_1_21.get(full.partition(".")[2], {}) if full.count(".") == 1 else {}
            for keyword in node.keywords:
                if keyword.arg in keywords:
                    found.append(Violation(path, node.lineno, f"{full}({keyword.arg}=)",
                                           f"{node.func.id}(..., {keyword.arg}=...); NumPy "
                                           f"{keywords[keyword.arg]}, Humble has 1.21"))
    return found


def _prefixes(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _numpy_violation(path: str, line: int, relative: str, used: str) -> Violation:
    return Violation(path, line, f"numpy.{relative}", f"{used}; NumPy {NUMPY_AFTER_1_21[relative]}, Humble has 1.21")


def _numpy_name(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``numpy.x.y`` for an attribute chain on a numpy name, else None."""
    dotted = _dotted(node)
    if dotted is None:
        return None
    head, _, rest = dotted.partition(".")
    if head not in aliases:
        return None
    return f"{aliases[head]}.{rest}" if rest else aliases[head]


def _numpy_kind(expr: ast.expr, scope: ScopeNode, aliases: dict[str, str],
                cache: dict[int, dict[str, str | None]]) -> str | None:
    """"ndarray" / "generator" when ``expr`` is a name the scope annotates or assigns as one."""
    if not isinstance(expr, ast.Name):
        return None
    if id(scope) not in cache:
        kinds: dict[str, set[str | None]] = {}
        if isinstance(scope, _FUNCTION_TYPES):
            for arg in _all_args(scope.args):
                kinds.setdefault(arg.arg, set()).add(_numpy_annotation_kind(arg.annotation, aliases))
        for node in _own_nodes(scope):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                kinds.setdefault(node.target.id, set()).add(_numpy_annotation_kind(node.annotation, aliases))
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    for n in ast.walk(target):
                        if isinstance(n, ast.Name):
                            kind = _numpy_value_kind(node.value, aliases) if n is target else None
                            kinds.setdefault(n.id, set()).add(kind)
            elif isinstance(node, (ast.AugAssign, ast.For, ast.comprehension, ast.withitem, ast.NamedExpr)):
                target = getattr(node, "target", None) or getattr(node, "optional_vars", None)
                for n in ast.walk(target) if target is not None else ():
                    if isinstance(n, ast.Name):
                        kinds.setdefault(n.id, set()).add(None)
        cache[id(scope)] = {name: (k.pop() if len(k) == 1 else None) for name, k in kinds.items()}
    return cache[id(scope)].get(expr.id)


def _numpy_annotation_kind(annotation: ast.expr | None, aliases: dict[str, str]) -> str | None:
    if annotation is None:
        return None
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return None
    if isinstance(annotation, ast.Subscript):
        annotation = annotation.value
    full = _numpy_name(annotation, aliases)
    return {"numpy.ndarray": "ndarray", "numpy.random.Generator": "generator"}.get(full or "")


def _numpy_value_kind(value: ast.expr, aliases: dict[str, str]) -> str | None:
    if not isinstance(value, ast.Call):
        return None
    full = _numpy_name(value.func, aliases)
    if full is None:
        return None
    if full == "numpy.random.default_rng":
        return "generator"
    relative = full.partition(".")[2]
    if "." not in relative and relative not in _NUMPY_NON_ARRAY_RESULTS and relative[:1].islower():
        return "ndarray"
    return None


# ---- the checks over the package ----------------------------------------------------------------
@pytest.fixture(scope="module")
def rclpy_api() -> dict[str, dict[str, dict[str, Any]]]:
    if not RCLPY_API_FILE.is_file():
        pytest.skip(f"{RCLPY_API_FILE} is absent (the compatibility facts of the shared folder)")
    return json.loads(RCLPY_API_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sources() -> list[tuple[Path, str, str]]:
    return package_sources()


def _report(violations: list[Violation], what: str) -> str:
    return f"{len(violations)} use(s) of {what}:\n" + "\n".join(f"  {v}" for v in violations)


@pytest.mark.parametrize("distro", DISTROS)
def test_package_uses_only_rclpy_api_of(distro, rclpy_api, sources):
    api = RclpyApi(distro, rclpy_api[distro])
    violations = rclpy_usage_violations(api, sources)
    assert not violations, _report(violations, f"rclpy API missing from {distro} (guard it: see rclpy_compat)")


def test_package_uses_no_numpy_api_newer_than_1_21(sources):
    violations = numpy_usage_violations(sources)
    assert not violations, _report(violations, "NumPy API newer than Humble's 1.21")


def test_the_checker_follows_the_package_nodes(rclpy_api, sources):
    """The checker sees the depth node's and the camera simulator's rclpy bases (else it checks nothing)."""
    checker = RclpyUsageChecker(RclpyApi("humble", rclpy_api["humble"]), sources)
    for qualname in ("space_clip_ros.ros.depth_node.DepthNode", "space_clip_ros.ros.camera_simulator.CameraSimulator"):
        assert checker.rclpy_bases(qualname) == ["rclpy.node.Node"]
        assert not checker._opaque(qualname)


# ---- the checkers catch what they must ----------------------------------------------------------
def _check_source(api_listing: dict, source: str, distro: str = "humble") -> list[Violation]:
    sources = [(REPO_ROOT / "probe" / "probe.py", "probe.probe", source)]
    return rclpy_usage_violations(RclpyApi(distro, api_listing[distro]), sources)


UNGUARDED_POST_SET = """
from rclpy.node import Node

class Probe(Node):
    def __init__(self):
        super().__init__("probe")
        self.add_on_set_parameters_callback(self._check)
        self.add_post_set_parameters_callback(self._apply)

    def _check(self, parameters):
        return None

    def _apply(self, parameters):
        pass
"""

GUARDED_POST_SET_HASATTR = """
from rclpy.node import Node

class Probe(Node):
    def __init__(self):
        super().__init__("probe")
        if hasattr(self, "add_post_set_parameters_callback"):
            self.add_post_set_parameters_callback(self._apply)
        else:
            self.add_on_set_parameters_callback(self._apply)

    def _apply(self, parameters):
        pass
"""

GUARDED_POST_SET_GETATTR = """
from rclpy.node import Node

def register(node: Node, apply):
    if getattr(node, "add_post_set_parameters_callback", None) is not None:
        def later():  # a guard covers the functions inside its function too
            node.add_post_set_parameters_callback(apply)

        return later
    node.add_on_set_parameters_callback(apply)
    return None
"""


def test_checker_reports_an_unguarded_newer_method_on_a_node_subclass(rclpy_api):
    violations = _check_source(rclpy_api, UNGUARDED_POST_SET)
    assert [(v.line, v.name) for v in violations] == [(8, "rclpy.node.Node.add_post_set_parameters_callback")]
    assert str(violations[0]).startswith("probe/probe.py:8: rclpy.node.Node.add_post_set_parameters_callback")
    assert _check_source(rclpy_api, UNGUARDED_POST_SET, "jazzy") == []


@pytest.mark.parametrize("source", [GUARDED_POST_SET_HASATTR, GUARDED_POST_SET_GETATTR], ids=["hasattr", "getattr"])
def test_checker_allows_a_guarded_newer_method(rclpy_api, source):
    assert _check_source(rclpy_api, source) == []
    # The same calls without the guard are reported: the guard is what makes them pass.
    unguarded = source.replace('hasattr(self, "add_post_set_parameters_callback")', "True").replace(
        'getattr(node, "add_post_set_parameters_callback", None)', "node.add_post_set_parameters_callback")
    assert {v.name for v in _check_source(rclpy_api, unguarded)} >= {"rclpy.node.Node.add_post_set_parameters_callback"}


@pytest.mark.parametrize(
    ("source", "line", "name"),
    [
        ("from rclpy.event_handler import PublisherEventCallbacks\n", 1, "rclpy.event_handler"),
        ("from rclpy.node import Node, NodeNameNonExistentError, Nope\n", 1, "rclpy.node.Nope"),
        ("import rclpy.type_hash\n", 1, "rclpy.type_hash"),
        ("import rclpy\n\nrclpy.init()\nrclpy.qos.QoSProfile(depth=1)\nrclpy.qos.NoSuchPolicy\n", 5,
         "rclpy.qos.NoSuchPolicy"),
        ("import rclpy\n\nnode = rclpy.create_node('n')\nnode.count_services('/s')\n", 4,
         "rclpy.node.Node.count_services"),
        ("from rclpy.node import Node\n\ndef f(node: Node | None):\n    return node.wait_for_node('/x', 1.0)\n", 4,
         "rclpy.node.Node.wait_for_node"),
        ("from rclpy.executors import SingleThreadedExecutor\n\nex = SingleThreadedExecutor()\nex.spin_once()\n"
         "ex.spin_forever()\n", 5, "rclpy.executors.SingleThreadedExecutor.spin_forever"),
        ("from rclpy.node import Node\n\nclass N(Node):\n    def f(self):\n        self.get_logger().info('x')\n"
         "        self.get_logger().notice('x')\n", 6, "rclpy.impl.rcutils_logger.RcutilsLogger.notice"),
        ("from rclpy.node import Node\n\nclass N(Node):\n    def __init__(self):\n        super().__init__('n')\n"
         "        self._t = self.create_timer(1.0, self.f)\n\n    def f(self):\n        self._t.cancel()\n"
         "        self._t.pause()\n", 10, "rclpy.timer.Timer.pause"),
        ("from rclpy.lifecycle import LifecycleNode\n\nclass L(LifecycleNode):\n    def f(self):\n"
         "        self.trigger_configure()\n        self.get_name()\n        self.count_clients('/c')\n", 7,
         "rclpy.lifecycle.node.LifecycleNode.count_clients"),
    ],
    ids=["module", "name", "import", "module-attribute", "create_node", "annotated", "executor", "logger",
         "attribute", "lifecycle"],
)
def test_checker_reports_each_kind_of_missing_name(rclpy_api, source, line, name):
    violations = _check_source(rclpy_api, source)
    assert [(v.line, v.name) for v in violations] == [(line, name)], violations


def test_checker_allows_imports_and_attributes_inside_try_except(rclpy_api):
    source = (
        "try:\n    from rclpy.event_handler import PublisherEventCallbacks\n"
        "except ImportError:\n    from rclpy.qos_event import PublisherEventCallbacks\n\n"
        "import rclpy\n\nnode = rclpy.create_node('n')\ntry:\n    node.count_services('/s')\n"
        "except AttributeError:\n    pass\n"
    )
    assert _check_source(rclpy_api, source) == []


def _numpy_violations_of(source: str) -> list[tuple[int, str]]:
    return [(v.line, v.name) for v in _numpy_module_violations("probe.py", ast.parse(source))]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import numpy as np\nnp.trapezoid([1.0, 2.0])\n", [(2, "numpy.trapezoid")]),
        ("import numpy as np\nx = np.exceptions.AxisError\n", [(2, "numpy.exceptions")]),
        ("import numpy\nnumpy.linalg.matrix_transpose(a)\nnumpy.linalg.norm(a)\n",
         [(2, "numpy.linalg.matrix_transpose")]),
        ("import numpy as np\nm = np.bool\n", [(2, "numpy.bool")]),
        ("from numpy import concat, concatenate\n", [(1, "numpy.concat")]),
        ("import numpy as np\nnp.asarray(x, dtype=np.float32, copy=False)\n", [(2, "numpy.asarray(copy=)")]),
        ("import numpy as np\nnp.percentile(x, 50, method='linear')\n", [(2, "numpy.percentile(method=)")]),
        ("import numpy as np\nrng = np.random.default_rng(0)\nrng.spawn(2)\nrng.random()\n",
         [(3, "numpy.random.Generator.spawn")]),
        ("import numpy as np\ndef f(a: np.ndarray, t):\n    return a.mT, t.mT, a.device, t.device\n",
         [(3, "numpy.ndarray.device"), (3, "numpy.ndarray.mT")]),
        ("import numpy as np\ndef f(x):\n    a = np.zeros(3)\n    return a.reshape(3, copy=False)\n",
         [(4, "numpy.ndarray.reshape(copy=)")]),
        ("import numpy as np\nif hasattr(np, 'trapezoid'):\n    f = np.trapezoid\nelse:\n    f = np.trapz\n", []),
        ("import numpy as np\na = np.array([1.0], copy=False).astype(np.float32, copy=False)\n", []),
    ],
    ids=["function", "module", "submodule", "bool", "from-import", "copy-keyword", "method-keyword", "spawn",
         "array-attribute", "array-method-keyword", "guarded", "fine-on-1.21"],
)
def test_numpy_checker_reports_api_newer_than_1_21(source, expected):
    assert sorted(_numpy_violations_of(source)) == sorted(expected)


# ---- the parameter callbacks on an rclpy without post-set callbacks (Humble), for real ----------
@pytest.fixture
def ros_context():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from ros_helpers import module_domain_id
    finally:
        sys.path.pop(0)
    context = Context()
    rclpy.init(context=context, domain_id=module_domain_id(__name__))
    yield context
    rclpy.try_shutdown(context=context)


def _probe_node_classes():
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.node import Node

    from space_clip_ros.ros.rclpy_compat import add_validated_parameters_callbacks

    class ProbeNode(Node):
        """Declares ``limit`` (>= 0); records what its applier saw."""

        def __init__(self, context) -> None:
            super().__init__("compat_probe", context=context, start_parameter_services=False, enable_rosout=False)
            self.applied: list[dict[str, object]] = []
            self.stored_while_applying: list[object] = []
            self.remove = add_validated_parameters_callbacks(self, self._check, self._apply)
            self.declare_parameter("limit", 3)
            self.declare_parameter("label", "a")

        def _check(self, parameters) -> SetParametersResult:
            bad = [p.name for p in parameters if p.name == "limit" and p.value < 0]
            return SetParametersResult(successful=not bad, reason=f"{bad} must be >= 0" if bad else "")

        def _apply(self, parameters) -> None:
            self.applied.append({p.name: p.value for p in parameters})
            if self.has_parameter("limit"):
                self.stored_while_applying.append(self.get_parameter("limit").value)

    class HumbleLikeProbeNode(ProbeNode):
        """The same node on an rclpy without post-set callbacks (they arrived in Iron)."""

        add_post_set_parameters_callback = None
        remove_post_set_parameters_callback = None

    return ProbeNode, HumbleLikeProbeNode


@pytest.mark.parametrize("humble_like", [False, True], ids=["post-set", "humble-fallback"])
def test_validated_parameters_apply_and_refuse_the_same_with_and_without_post_set(ros_context, humble_like):
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.parameter import Parameter

    probe_class, humble_class = _probe_node_classes()
    node = (humble_class if humble_like else probe_class)(ros_context)
    try:
        assert node.applied == [{"limit": 3}, {"label": "a"}]  # declarations go through both callbacks

        (result,) = node.set_parameters([Parameter("limit", value=5)])
        assert result.successful
        assert node.applied[-1] == {"limit": 5} and node.get_parameter("limit").value == 5

        (result,) = node.set_parameters([Parameter("limit", value=-1)])
        assert not result.successful and "must be >= 0" in result.reason
        assert node.applied[-1] == {"limit": 5} and node.get_parameter("limit").value == 5

        # A descriptor check (the declared type) refuses before any callback runs.
        (result,) = node.set_parameters([Parameter("limit", value="many")])
        assert not result.successful and node.applied[-1] == {"limit": 5}

        result = node.set_parameters_atomically([Parameter("limit", value=7), Parameter("label", value="b")])
        assert result.successful and node.applied[-1] == {"limit": 7, "label": "b"}

        # Another on-set callback registered later runs first (both rclpys): when it refuses,
        # nothing was applied.
        count = len(node.applied)
        node.add_on_set_parameters_callback(lambda params: SetParametersResult(successful=False, reason="no"))
        (result,) = node.set_parameters([Parameter("limit", value=9)])
        assert not result.successful and len(node.applied) == count and node.get_parameter("limit").value == 7

        # What differs: Humble applies before storing, so the applier must read its argument.
        assert node.stored_while_applying[-1] == (5 if humble_like else 7)

    finally:
        node.destroy_node()


@pytest.mark.parametrize("humble_like", [False, True], ids=["post-set", "humble-fallback"])
def test_validated_parameters_removal(ros_context, humble_like):
    from rclpy.parameter import Parameter

    probe_class, humble_class = _probe_node_classes()
    node = (humble_class if humble_like else probe_class)(ros_context)
    try:
        node.remove()
        (result,) = node.set_parameters([Parameter("limit", value=-4)])
        assert result.successful and node.applied == [{"limit": 3}, {"label": "a"}]
    finally:
        node.destroy_node()


class _FakePredictor:
    device = "cpu"

    def describe(self) -> str:
        return "fake predictor"


@pytest.fixture
def depth_node_without_model(monkeypatch):
    """The depth node class with the model replaced by a stub (its parameter handling is real)."""
    depth_node = pytest.importorskip("space_clip_ros.ros.depth_node")
    from space_clip_ros.ros import depth_pipeline

    monkeypatch.setattr(depth_node, "build_predictor", lambda settings, plan=None: _FakePredictor())
    monkeypatch.setattr(depth_pipeline, "DepthFrameProcessor", lambda predictor: object())
    monkeypatch.setattr(depth_node, "model_facts", lambda predictor, checkpoint: {})
    return depth_node


@pytest.mark.parametrize("humble_like", [False, True], ids=["post-set", "humble-fallback"])
def test_depth_node_parameters_without_post_set_callbacks(ros_context, depth_node_without_model, monkeypatch,
                                                          humble_like):
    from rclpy.exceptions import ParameterException
    from rclpy.parameter import Parameter

    depth_node = depth_node_without_model
    if humble_like:
        monkeypatch.setattr(depth_node.DepthNode, "add_post_set_parameters_callback", None, raising=False)
    options = {"context": ros_context, "start_parameter_services": False, "enable_rosout": False}

    # A value the node's check refuses at start-up stops the constructor with rclpy's
    # ParameterException (main's exit code 2); one against the rules between parameters with StartupError.
    with pytest.raises(ParameterException, match="depth_encoding must be one of"):
        depth_node.DepthNode(parameter_overrides=[Parameter("depth_encoding", value="8UC1")], **options)
    with pytest.raises(depth_node.StartupError, match="min_depth"):
        depth_node.DepthNode(parameter_overrides=[Parameter("min_depth", value=5.0),
                                                  Parameter("max_depth", value=2.0)], **options)

    node = depth_node.DepthNode(parameter_overrides=[Parameter("points_stride", value=4)], **options)
    try:
        # The path taken: this rclpy (Iron and later) keeps its post-set callbacks in this list.
        assert len(node._post_set_parameters_callbacks) == (0 if humble_like else 1)
        assert node.settings.outputs.points_stride == 4

        (result,) = node.set_parameters([Parameter("points_stride", value=2)])
        assert result.successful and node.settings.outputs.points_stride == 2

        (result,) = node.set_parameters([Parameter("depth_encoding", value="8UC1")])
        assert not result.successful and "must be one of" in result.reason
        assert node.settings.outputs.depth_encoding == "32FC1"
        (result,) = node.set_parameters([Parameter("points_stride", value=-1)])  # descriptor's range
        assert not result.successful and node.settings.outputs.points_stride == 2

        (result,) = node.set_parameters([Parameter("min_depth", value=500.0)])
        assert not result.successful and "max_depth" in result.reason
        before = node.settings.outputs.max_depth
        result = node.set_parameters_atomically([Parameter("max_depth", value=before + 10.0),
                                                 Parameter("min_depth", value=before + 1.0)])
        assert result.successful
        assert (node.settings.outputs.min_depth, node.settings.outputs.max_depth) == (before + 1.0, before + 10.0)

        (result,) = node.set_parameters([Parameter("device", value="cuda")])  # read-only
        assert not result.successful and node.settings.device == "auto"
    finally:
        node.stop()
        node.destroy_node()


@pytest.mark.parametrize("humble_like", [False, True], ids=["post-set", "humble-fallback"])
def test_depth_node_camera_parameters_without_post_set_callbacks(ros_context, depth_node_without_model, monkeypatch,
                                                                 humble_like):
    """``cameras`` (a string array, declared by its type) and each camera's own parameters."""
    from rclpy.parameter import Parameter

    depth_node = depth_node_without_model
    if humble_like:
        monkeypatch.setattr(depth_node.DepthNode, "add_post_set_parameters_callback", None, raising=False)
    options = {"context": ros_context, "start_parameter_services": False, "enable_rosout": False}

    with pytest.raises(depth_node.StartupError, match=r"rear.output_width \(320\) and rear.output_height \(-1\)"):
        depth_node.DepthNode(parameter_overrides=[Parameter("cameras", value=["front", "rear"]),
                                                  Parameter("rear.output_width", value=320)], **options)

    node = depth_node.DepthNode(parameter_overrides=[
        Parameter("cameras", value=["front", "rear"]), Parameter("rear.image_transport", value="compressed"),
        Parameter("rear.output_width", value=320), Parameter("rear.output_height", value=240)], **options)
    try:
        assert node.settings.cameras == ("front", "rear")
        assert node.settings.image_transport_for("rear") == "compressed"
        assert node.settings.outputs_for("rear").output_size == (240, 320)
        assert node.get_parameter("front.output_width").value == -1

        result = node.set_parameters_atomically([Parameter("front.output_width", value=64),
                                                 Parameter("front.output_height", value=48)])
        assert result.successful and node.settings.outputs_for("front").output_size == (48, 64)
        (result,) = node.set_parameters([Parameter("front.output_width", value=0)])
        assert not result.successful and "front.output_height (48)" in result.reason
        (result,) = node.set_parameters([Parameter("rear.image_transport", value="raw")])  # read-only
        assert not result.successful and node.settings.image_transport_for("rear") == "compressed"
    finally:
        node.stop()
        node.destroy_node()

    # Without the parameter (rcl reads an empty YAML list as "not set" too): the single camera.
    node = depth_node.DepthNode(**options)
    try:
        assert node.settings.cameras == () and not node.has_parameter("front.output_width")
    finally:
        node.stop()
        node.destroy_node()
