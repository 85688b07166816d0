"""Signatures and workflows (chain, group) in Celery's wire shape (§4 of the protocol notes)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.result import ResultBase

if TYPE_CHECKING:
    from celeriac.app import Celery
    from celeriac.result import EagerResult

__all__ = ["GroupResult", "Signature", "chain", "group", "maybe_signature", "signature"]


class Signature(dict[str, Any]):
    """A task call to make later: a dict with ``task``, ``args``, ``kwargs``, ``options``,
    ``subtask_type`` and ``immutable``, exactly as it travels inside messages."""

    def __init__(
        self,
        task: str | Mapping[str, Any] | None = None,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        subtask_type: str | None = None,
        immutable: bool = False,
        app: Celery | None = None,
        **extra: Any,
    ) -> None:
        if isinstance(task, Mapping):
            super().__init__(task)
            self.setdefault("args", [])
            self.setdefault("kwargs", {})
            self.setdefault("options", {})
            self.setdefault("subtask_type", None)
            self.setdefault("immutable", False)
        else:
            super().__init__(
                task=task,
                args=list(args or ()),
                kwargs=dict(kwargs or {}),
                options={**dict(options or {}), **extra},
                subtask_type=subtask_type,
                immutable=immutable,
            )
        self._app = app

    # dict subclasses with extra attributes must copy them explicitly
    @property
    def app(self) -> Celery:
        if self._app is None:
            from celeriac.app import current_app

            self._app = current_app()
        return self._app

    @property
    def name(self) -> str:
        return str(self["task"])

    task = name

    @property
    def args(self) -> list[Any]:
        args: list[Any] = self["args"]
        return args

    @property
    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = self["kwargs"]
        return kwargs

    @property
    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = self["options"]
        return options

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @property
    def id(self) -> str | None:
        value: str | None = self.options.get("task_id")
        return value

    def clone(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A copy with ``args`` prepended (unless immutable) and options merged."""
        new_args = list(self.args)
        if args and not self.immutable:
            new_args = list(args) + new_args
        new_kwargs = dict(self.kwargs)
        if kwargs and not self.immutable:
            new_kwargs.update(kwargs)
        return Signature(
            {
                "task": self["task"],
                "args": new_args,
                "kwargs": new_kwargs,
                "options": {**self.options, **options},
                "subtask_type": self.get("subtask_type"),
                "immutable": self.immutable,
            },
            app=self._app,
        )

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        if immutable is not None:
            self["immutable"] = immutable
        self.options.update(options)
        return self

    def freeze(self, _id: str | None = None, **options: Any) -> str:
        """Fix this signature's task id now (so a result can be awaited before it is sent)."""
        task_id = _id or self.options.get("task_id") or str(uuid.uuid4())
        self.options["task_id"] = task_id
        for key, value in options.items():
            if value is not None:
                self.options.setdefault(key, value)
        return str(task_id)

    def link(self, callback: Mapping[str, Any]) -> Mapping[str, Any]:
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultBase:
        sig = self.clone(args, kwargs, **options) if (args or kwargs or options) else self
        opts = dict(sig.options)
        task = self.app.tasks.get(sig.name)
        if task is not None:
            return task.apply_async(sig.args, sig.kwargs, **opts)
        return self.app.send_task(sig.name, sig.args, sig.kwargs, **opts)

    def delay(self, *args: Any, **kwargs: Any) -> ResultBase:
        return self.apply_async(args, kwargs)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult:
        sig = self.clone(args, kwargs)
        opts = {**sig.options, **options}
        return self.app.tasks[sig.name].apply(sig.args, sig.kwargs, **opts)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sig = self.clone(args, kwargs)
        return self.app.tasks[sig.name](*sig.args, **sig.kwargs)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, Signature):
            return chain(self, other)
        return super().__or__(other)

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.name}({args})"


def signature(value: Any, app: Celery | None = None, **options: Any) -> Signature:
    """Turn a signature dict (from a message) or a Signature into a :class:`Signature`."""
    if isinstance(value, Signature):
        return value.clone(**options) if options else value
    sig = Signature(dict(value), app=app)
    if options:
        sig.options.update(options)
    return sig


def maybe_signature(value: Any, app: Celery | None = None) -> Signature | None:
    if value is None:
        return None
    return signature(value, app=app)


class _Workflow(Signature):
    """A signature made of other signatures (``kwargs["tasks"]``): what chain and group share."""

    kind = ""

    def __init__(self, *tasks: Any, app: Celery | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            tasks = tuple(tasks[0])
        self._app = app
        members = self._members([signature(t, app=app) for t in tasks])
        super().__init__(
            f"celery.{self.kind}",
            (),
            {"tasks": members},
            options,
            subtask_type=self.kind,
            app=app,
        )

    def _members(self, tasks: list[Signature]) -> list[Signature]:
        return tasks

    @property
    def tasks(self) -> list[Signature]:
        tasks: list[Signature] = self.kwargs["tasks"]
        return tasks


class chain(_Workflow):
    """Run tasks one after the other, each getting the previous result as first argument."""

    kind = "chain"

    def _members(self, tasks: list[Signature]) -> list[Signature]:
        flat: list[Signature] = []
        for sig in tasks:
            if sig.get("subtask_type") == "chain":
                flat.extend(signature(x, app=self._app) for x in sig.kwargs["tasks"])
            else:
                flat.append(sig)
        return flat

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultBase:
        """Freeze every step's id, then send only the first with the rest in ``chain``."""
        steps = [s.clone() for s in self.tasks]
        if not steps:
            raise ValueError("cannot apply an empty chain")
        app = steps[0]._app or self._app
        for step in steps:
            step._app = app
            step.freeze()
        first, rest = steps[0], steps[1:]
        if args and not first.immutable:
            first = first.clone(args, kwargs)
        first_opts = {**first.options, **options, **self.options}
        if rest:
            first_opts["chain"] = [dict(s) for s in reversed(rest)]
        sent = first.clone(**first_opts)
        sent._app = app
        result = Signature.apply_async(sent)
        if not rest:
            return result
        from celeriac.result import AsyncResult

        return AsyncResult(str(rest[-1].id), app=sent.app)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self._app)
        return super().__or__(other)


class GroupResult(ResultBase):
    """The results of a group's members, in order."""

    def __init__(self, id: str, results: list[ResultBase]) -> None:
        self.id = id
        self.results = results

    def as_tuple(self) -> Any:
        return ((self.id, None), [r.as_tuple() for r in self.results])

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> list[Any]:
        return [r.get(timeout=timeout, propagate=propagate) for r in self.results]

    join = get

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Any:
        return iter(self.results)


class group(_Workflow):
    """Run tasks in parallel; each message carries the group id and its index."""

    kind = "group"

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        group_id = self.options.get("task_id") or str(uuid.uuid4())
        results: list[ResultBase] = []
        for index, sig in enumerate(self.tasks):
            member = sig.clone(args, kwargs, group_id=group_id, group_index=index, **options)
            member._app = sig._app or self._app
            results.append(Signature.apply_async(member))
        return GroupResult(group_id, results)

    def __iter__(self) -> Any:
        return iter(self.tasks)


def _iter_results(results: Iterable[ResultBase]) -> list[Any]:
    return [r.as_tuple() for r in results]
