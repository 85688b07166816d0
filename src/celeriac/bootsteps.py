"""Bootsteps: a worker built from small steps that declare which steps they need started first."""

from __future__ import annotations

import heapq
import importlib
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from celeriac.errors import BootstepError

__all__ = [
    "CLOSE",
    "INIT",
    "RUN",
    "TERMINATE",
    "Blueprint",
    "StartStopStep",
    "Step",
]

logger = logging.getLogger("celeriac.bootsteps")

#: Blueprint states; the values match Celery's so code comparing them reads the same.
INIT = 0
RUN = 1
CLOSE = 2
TERMINATE = 3

_STATE_NAMES = {INIT: "initializing", RUN: "running", CLOSE: "closing", TERMINATE: "terminating"}


class Step:
    """A part of a worker that other parts may require.

    Subclasses set the class attributes below; ``name`` and ``label`` are filled in for each
    subclass that does not set them (``name`` is ``module.qualname``, ``label`` the class name).

    Attributes:
        name: unique name of the step, used in error messages and in string requirements.
        label: short name for graphs and logs.
        requires: steps that must be created and started before this one: classes, or strings
            naming a class (``"module:Class"``, ``"module.Class"``) or the ``name``/``label``
            of another step of the same blueprint. A required class that is not in the
            blueprint is pulled in.
        enabled: default answer of :meth:`include_if`; ``__init__`` may set it per instance.
        conditional: only informs the graph output that the step may be left out.
        last: start after every step that does not depend on it (the consumer).
    """

    name: ClassVar[str] = "celeriac.bootsteps.Step"
    label: ClassVar[str] = "Step"
    requires: ClassVar[tuple[type[Step] | str, ...]] = ()
    enabled: bool = True
    conditional: ClassVar[bool] = False
    last: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Checked in the class's own namespace so a subclass never inherits its parent's name.
        if "name" not in cls.__dict__:
            cls.name = f"{cls.__module__}.{cls.__qualname__}"
        if "label" not in cls.__dict__:
            cls.label = cls.__name__

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        """Bind the step to ``parent``; runs for every step, included or not."""

    def include_if(self, parent: Any) -> bool:
        """Say whether the step takes part in this parent (default: :attr:`enabled`)."""
        return self.enabled

    def create(self, parent: Any) -> Any:
        """Build what the step manages; called once, in start order, for included steps."""
        return None

    def info(self, parent: Any) -> dict[str, Any] | None:
        """Return what the step adds to the worker's ``stats`` answer, if anything."""
        return None

    def __repr__(self) -> str:
        return f"<step {self.label}>"


class StartStopStep(Step):
    """A step with a life: started in order, stopped in reverse.

    The default methods delegate to :attr:`obj` (what :meth:`create` returned) when it has a
    method of the same name, called without arguments.

    Attributes:
        obj: the object :meth:`create` returned, or ``None``.
    """

    obj: Any = None

    def _delegate(self, method: str) -> Any:
        fun = getattr(self.obj, method, None) if self.obj is not None else None
        return fun() if fun is not None else None

    def start(self, parent: Any) -> Any:
        """Start :attr:`obj`."""
        return self._delegate("start")

    def stop(self, parent: Any) -> Any:
        """Stop :attr:`obj` warmly."""
        return self._delegate("stop")

    def terminate(self, parent: Any) -> Any:
        """Stop :attr:`obj` now; falls back to :meth:`stop` when it cannot terminate."""
        if self.obj is not None and hasattr(self.obj, "terminate"):
            return self.obj.terminate()
        return self.stop(parent)

    def close(self, parent: Any) -> Any:
        """Tell :attr:`obj` to stop taking new work, before it is stopped."""
        return self._delegate("close")

    def shutdown(self, parent: Any) -> Any:
        """Release :attr:`obj` for good (after the last restart)."""
        return self._delegate("shutdown")


class Blueprint:
    """An ordered set of steps applied to a parent (the worker, the consumer).

    Args:
        steps: steps added to :attr:`default_steps`.
        name: overrides the class's :attr:`name`.
        on_start: called after every step has started.
        on_close: called before the steps are closed.
        on_stopped: called after every step has stopped.

    Attributes:
        order: the included step instances in start order (set by :meth:`apply`).
        state: :data:`INIT`, :data:`RUN`, :data:`CLOSE` or :data:`TERMINATE`.
    """

    name: str = "blueprint"
    default_steps: ClassVar[tuple[type[Step], ...]] = ()

    def __init__(
        self,
        steps: Iterable[type[Step]] | None = None,
        name: str | None = None,
        on_start: Callable[[], Any] | None = None,
        on_close: Callable[[], Any] | None = None,
        on_stopped: Callable[[], Any] | None = None,
    ) -> None:
        if name is not None:
            self.name = name
        self.types: tuple[type[Step], ...] = tuple(self.default_steps) + tuple(steps or ())
        self.on_start = on_start
        self.on_close = on_close
        self.on_stopped = on_stopped
        self.order: list[Step] = []
        self.state = INIT
        self.started = 0
        self.shutdown_complete = threading.Event()
        self._resolved: tuple[list[type[Step]], dict[type[Step], tuple[type[Step], ...]]] | None
        self._resolved = None

    # -- building ----------------------------------------------------------------------------

    def resolve(self) -> list[type[Step]]:
        """Return every step class in start order (before ``include_if``).

        Raises:
            BootstepError: a cycle, or a requirement that names no step.
        """
        return self._resolve()[0]

    def requirements(self, step: type[Step]) -> tuple[type[Step], ...]:
        """Return the resolved classes that ``step`` requires."""
        return self._resolve()[1][step]

    def apply(self, parent: Any, **kwargs: Any) -> Blueprint:
        """Instantiate every step with ``(parent, **kwargs)`` and create the included ones.

        The included steps, in start order, end up on :attr:`order` and ``parent.steps``.
        """
        order: list[Step] = []
        for cls in self.resolve():
            step = cls(parent, **kwargs)
            if not step.include_if(parent):
                logger.debug("%s: step %s is not included", self.name, cls.name)
                continue
            obj = step.create(parent)
            if isinstance(step, StartStopStep):
                step.obj = obj
            order.append(step)
        self.order = order
        parent.steps = list(order)
        logger.debug("%s: boot order %s", self.name, ", ".join(s.label for s in order))
        return self

    def __getitem__(self, name: str) -> Step:
        """Return the included step with this ``name`` or ``label``."""
        for step in self.order:
            if name in (step.name, step.label):
                return step
        raise KeyError(name)

    # -- life --------------------------------------------------------------------------------

    def start(self, parent: Any) -> None:
        """Start every included :class:`StartStopStep` in order, then call ``on_start``."""
        self.state = RUN
        self.started = 0
        self.shutdown_complete.clear()
        for i, step in enumerate(self.order):
            # Counted before the call so that a step failing half-way is stopped too.
            self.started = i + 1
            if isinstance(step, StartStopStep):
                logger.debug("%s: starting %s", self.name, step.label)
                step.start(parent)
        if self.on_start is not None:
            self.on_start()

    def stop(self, parent: Any, close: bool = True, terminate: bool = False) -> None:
        """Stop the started steps in reverse order; errors are logged, not raised.

        Args:
            parent: the object the blueprint was applied to.
            close: first call ``close`` on every started step (and ``on_close``).
            terminate: call ``terminate`` instead of ``stop``.
        """
        if self.state in (CLOSE, TERMINATE):
            return
        started = self.order[: self.started]
        self.state = CLOSE
        if close:
            if self.on_close is not None:
                self.on_close()
            self._send(started, parent, "close", "closing", reverse=True, propagate=False)
        method, what = ("terminate", "terminating") if terminate else ("stop", "stopping")
        self._send(started, parent, method, what, reverse=True, propagate=False)
        self.started = 0
        if self.on_stopped is not None:
            self.on_stopped()
        self.state = TERMINATE
        self.shutdown_complete.set()

    def restart(self, parent: Any, method: str = "stop") -> None:
        """Call ``method`` on every step in reverse order, logging errors; :meth:`start` next."""
        self._send(self.order, parent, method, "restarting", reverse=True, propagate=False)

    def send_all(
        self,
        parent: Any,
        method: str,
        description: str | None = None,
        reverse: bool = True,
        propagate: bool = True,
        args: tuple[Any, ...] = (),
    ) -> None:
        """Call ``step.method(parent, *args)`` on every included step that has it.

        Args:
            parent: the object the blueprint was applied to.
            method: the step method to call.
            description: what to say in logs (default: the method name).
            reverse: go in stop order.
            propagate: raise the first error instead of logging it and going on.
            args: extra arguments after ``parent``.
        """
        self._send(self.order, parent, method, description, reverse, propagate, args)

    def _send(
        self,
        steps: list[Step],
        parent: Any,
        method: str,
        description: str | None,
        reverse: bool,
        propagate: bool,
        args: tuple[Any, ...] = (),
    ) -> None:
        what = description or method.replace("_", " ")
        for step in reversed(steps) if reverse else steps:
            fun = getattr(step, method, None)
            if fun is None:
                continue
            logger.debug("%s: %s %s", self.name, what, step.label)
            try:
                fun(parent, *args)
            except Exception:
                if propagate:
                    raise
                logger.exception("%s: error %s step %s", self.name, what, step.label)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`stop` has finished; return whether it has."""
        return self.shutdown_complete.wait(timeout)

    def human_state(self) -> str:
        """Return the state as a word (``"running"``)."""
        return _STATE_NAMES[self.state]

    def info(self, parent: Any) -> dict[str, Any]:
        """Merge what every included step's :meth:`Step.info` returns."""
        merged: dict[str, Any] = {}
        for step in self.order:
            merged.update(step.info(parent) or {})
        return merged

    # -- output ------------------------------------------------------------------------------

    def graph_text(self) -> str:
        """Return one line per step in start order, with what it requires."""
        classes, requires = self._resolve()
        included = {type(s) for s in self.order}
        width = max((len(c.label) for c in classes), default=0)
        lines = [f"{self.name} bootsteps, in start order:"]
        for i, cls in enumerate(classes, 1):
            needs = ", ".join(r.label for r in requires[cls]) or "-"
            flags = [f for f, on in (("last", cls.last), ("conditional", cls.conditional)) if on]
            if self.order and cls not in included:
                flags.append("not included")
            extra = f"  [{', '.join(flags)}]" if flags else ""
            lines.append(f"{i:3d}. {cls.label:<{width}}  requires: {needs}{extra}")
        return "\n".join(lines)

    def graph_dot(self) -> str:
        """Return the step graph in graphviz dot; edges point at what a step requires."""
        classes, requires = self._resolve()
        lines = [f"digraph {_dot_quote(self.name)} {{", "  rankdir=BT;"]
        for cls in classes:
            attrs = [f"label={_dot_quote(cls.label)}"]
            if cls.last:
                attrs.append("shape=parallelogram")
            if cls.conditional:
                attrs.append("style=dashed")
            lines.append(f"  {_dot_quote(cls.name)} [{', '.join(attrs)}];")
        for cls in classes:
            for req in requires[cls]:
                lines.append(f"  {_dot_quote(cls.name)} -> {_dot_quote(req.name)};")
        lines.append("}")
        return "\n".join(lines)

    # -- resolution --------------------------------------------------------------------------

    def _resolve(self) -> tuple[list[type[Step]], dict[type[Step], tuple[type[Step], ...]]]:
        if self._resolved is None:
            classes = self._collect()
            requires = {cls: self._requirements_of(cls, classes) for cls in classes}
            self._resolved = (self._toposort(classes, requires), requires)
        return self._resolved

    def _collect(self) -> list[type[Step]]:
        """Gather the listed steps and, breadth first, the classes they require."""
        classes: list[type[Step]] = []
        seen: set[type[Step]] = set()

        def add(cls: type[Step]) -> None:
            if cls not in seen:
                seen.add(cls)
                classes.append(cls)

        for cls in self.types:
            if not (isinstance(cls, type) and issubclass(cls, Step)):
                raise BootstepError(f"{self.name} blueprint lists {cls!r}, which is not a Step")
            add(cls)
        i = 0
        while i < len(classes):
            cls = classes[i]
            i += 1
            for req in cls.requires:
                if isinstance(req, str):
                    if _find(req, classes) is not None or not _importable(req):
                        continue
                    try:
                        req = _import(req)
                    except (ImportError, AttributeError):
                        # Maybe the label of a step pulled in later; the final pass decides.
                        continue
                add(_check_step(cls, req))
        by_name: dict[str, type[Step]] = {}
        for cls in classes:
            other = by_name.setdefault(cls.name, cls)
            if other is not cls:
                raise BootstepError(
                    f"cannot order {self.name} bootsteps: two steps are named {cls.name!r} "
                    f"({other!r} and {cls!r})"
                )
        return classes

    def _requirements_of(
        self, cls: type[Step], classes: list[type[Step]]
    ) -> tuple[type[Step], ...]:
        found: list[type[Step]] = []
        for req in cls.requires:
            if isinstance(req, str):
                target = _find(req, classes)
                cause: BaseException | None = None
                if target is None and _importable(req):
                    try:
                        target = _check_step(cls, _import(req))
                    except (ImportError, AttributeError) as exc:
                        cause = exc
                if target is None:
                    raise BootstepError(
                        f"step {cls.name} requires {req!r}, which is not a known step"
                    ) from cause
                found.append(target)
            else:
                found.append(_check_step(cls, req))
        return tuple(dict.fromkeys(found))

    def _toposort(
        self, classes: list[type[Step]], requires: dict[type[Step], tuple[type[Step], ...]]
    ) -> list[type[Step]]:
        """Kahn's algorithm; among ready steps the earliest listed goes first, ``last`` ones
        only when nothing else is ready."""
        index = {cls: i for i, cls in enumerate(classes)}
        waiting = {cls: len(requires[cls]) for cls in classes}
        dependents: dict[type[Step], list[type[Step]]] = {cls: [] for cls in classes}
        for cls in classes:
            for req in requires[cls]:
                dependents[req].append(cls)
        ready = [(cls.last, index[cls]) for cls in classes if not waiting[cls]]
        heapq.heapify(ready)
        order: list[type[Step]] = []
        while ready:
            cls = classes[heapq.heappop(ready)[1]]
            order.append(cls)
            for dep in dependents[cls]:
                waiting[dep] -= 1
                if not waiting[dep]:
                    heapq.heappush(ready, (dep.last, index[dep]))
        if len(order) < len(classes):
            cycle = _find_cycle([c for c in classes if waiting[c]], requires, waiting)
            raise BootstepError(
                f"cannot order {self.name} bootsteps: cycle " + " -> ".join(c.name for c in cycle)
            )
        return order


def _find(ref: str, classes: list[type[Step]]) -> type[Step] | None:
    """Find the step a string names: by ``name``, then by unambiguous ``label``."""
    for cls in classes:
        if cls.name == ref:
            return cls
    by_label = [cls for cls in classes if cls.label == ref]
    if len(by_label) > 1:
        names = ", ".join(c.name for c in by_label)
        raise BootstepError(f"step requirement {ref!r} is ambiguous: it is the label of {names}")
    return by_label[0] if by_label else None


def _importable(ref: str) -> bool:
    return ":" in ref or "." in ref


def _import(ref: str) -> Any:
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
    else:
        module_name, _, attr = ref.rpartition(".")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _check_step(owner: type[Step], req: object) -> type[Step]:
    if isinstance(req, type) and issubclass(req, Step):
        return req
    raise BootstepError(f"step {owner.name} requires {req!r}, which is not a Step class")


def _find_cycle(
    stuck: list[type[Step]],
    requires: dict[type[Step], tuple[type[Step], ...]],
    waiting: dict[type[Step], int],
) -> list[type[Step]]:
    """Walk unmet requirements from a stuck step until one repeats; return that loop."""
    path: list[type[Step]] = []
    position: dict[type[Step], int] = {}
    cls = stuck[0]
    while cls not in position:
        position[cls] = len(path)
        path.append(cls)
        # Every stuck step has at least one stuck requirement, so this never runs dry.
        cls = next(r for r in requires[cls] if waiting[r])
    loop = path[position[cls] :]
    # Start the loop at its earliest-listed step so the message does not depend on where the
    # walk happened to enter it.
    first = min(range(len(loop)), key=lambda i: stuck.index(loop[i]))
    loop = loop[first:] + loop[:first]
    return [*loop, loop[0]]


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
