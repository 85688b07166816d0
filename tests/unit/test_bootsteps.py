"""Tests for celeriac.bootsteps: ordering, life cycle, errors and graph output."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from celeriac import bootsteps
from celeriac.bootsteps import Blueprint, StartStopStep, Step
from celeriac.errors import BootstepError


class Parent:
    """Stands in for the worker: records what steps do to it."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.events: list[str] = []


class Recorder(StartStopStep):
    """Records each call on the parent, so tests can check order."""

    def create(self, parent: Parent) -> Any:
        parent.events.append(f"create {self.label}")
        return None

    def start(self, parent: Parent) -> None:
        parent.events.append(f"start {self.label}")

    def stop(self, parent: Parent) -> None:
        parent.events.append(f"stop {self.label}")

    def close(self, parent: Parent) -> None:
        parent.events.append(f"close {self.label}")


class Timer(Recorder):
    pass


class Hub(Recorder):
    requires = (Timer,)


class Pool(Recorder):
    requires = (Hub, Timer)


class Consumer(Recorder):
    requires = (Pool,)
    last = True


def labels(bp: Blueprint) -> list[str]:
    return [s.label for s in bp.order]


def test_name_and_label_default_to_the_class() -> None:
    assert Timer.name == f"{__name__}.Timer"
    assert Timer.label == "Timer"

    class Named(Step):
        name = "proj.Named"
        label = "N"

    class Child(Named):
        pass

    assert (Named.name, Named.label) == ("proj.Named", "N")
    assert Child.name.endswith("<locals>.Child")
    assert Child.label == "Child"


def test_topological_order_with_diamond_and_pulled_in_requirements() -> None:
    class A(Recorder):
        pass

    class B(Recorder):
        requires = (A,)

    class C(Recorder):
        requires = (A,)

    class D(Recorder):
        requires = (B, C)

    # Only D is listed: B, C and A are pulled in.
    bp = Blueprint([D]).apply(Parent())
    assert labels(bp) == ["A", "B", "C", "D"]


def test_ties_keep_declaration_order() -> None:
    class A(Recorder):
        pass

    class B(Recorder):
        pass

    class C(Recorder):
        pass

    assert labels(Blueprint([C, A, B]).apply(Parent())) == ["C", "A", "B"]
    assert labels(Blueprint([B, C, A]).apply(Parent())) == ["B", "C", "A"]


def test_last_step_goes_last_even_when_listed_first() -> None:
    class Extra(Recorder):
        pass

    bp = Blueprint([Consumer, Timer, Extra]).apply(Parent())
    assert labels(bp) == ["Timer", "Extra", "Hub", "Pool", "Consumer"]


def test_default_steps_come_before_extra_steps() -> None:
    class Worker(Blueprint):
        name = "worker"
        default_steps = (Timer, Hub)

    class Mine(Recorder):
        pass

    bp = Worker([Mine]).apply(Parent())
    assert labels(bp) == ["Timer", "Hub", "Mine"]
    assert bp.name == "worker"
    assert Worker(name="other").name == "other"


def test_apply_stores_order_on_parent_and_creates_in_order() -> None:
    parent = Parent()
    bp = Blueprint([Pool]).apply(parent)
    assert parent.steps == bp.order
    assert parent.events == ["create Timer", "create Hub", "create Pool"]
    assert bp["Hub"] is bp.order[1]
    assert bp[Hub.name] is bp.order[1]
    with pytest.raises(KeyError):
        bp["Nope"]


def test_include_if_false_skips_create_and_start() -> None:
    class Off(Recorder):
        def __init__(self, parent: Parent, **kwargs: Any) -> None:
            self.enabled = kwargs["with_off"]

    class After(Recorder):
        requires = (Off,)

    parent = Parent()
    bp = Blueprint([After]).apply(parent, with_off=False)
    bp.start(parent)
    assert labels(bp) == ["After"]
    assert parent.events == ["create After", "start After"]

    parent = Parent()
    Blueprint([After]).apply(parent, with_off=True)
    assert parent.events == ["create Off", "create After"]


def test_start_in_order_and_stop_in_reverse() -> None:
    calls: list[str] = []
    parent = Parent()
    bp = Blueprint(
        [Consumer],
        on_start=lambda: calls.append("on_start"),
        on_close=lambda: calls.append("on_close"),
        on_stopped=lambda: calls.append("on_stopped"),
    ).apply(parent)
    assert bp.state == bootsteps.INIT
    parent.events.clear()
    bp.start(parent)
    assert bp.state == bootsteps.RUN
    assert bp.human_state() == "running"
    assert parent.events == ["start Timer", "start Hub", "start Pool", "start Consumer"]
    assert calls == ["on_start"]

    parent.events.clear()
    bp.stop(parent)
    assert parent.events == [
        *[f"close {n}" for n in ("Consumer", "Pool", "Hub", "Timer")],
        *[f"stop {n}" for n in ("Consumer", "Pool", "Hub", "Timer")],
    ]
    assert calls == ["on_start", "on_close", "on_stopped"]
    assert bp.state == bootsteps.TERMINATE
    assert bp.join(0)

    parent.events.clear()
    bp.stop(parent)
    assert parent.events == []


def test_stop_without_close_and_terminate() -> None:
    class Terminable(Recorder):
        def terminate(self, parent: Parent) -> None:
            parent.events.append(f"terminate {self.label}")

    parent = Parent()
    bp = Blueprint([Timer, Terminable]).apply(parent)
    bp.start(parent)
    parent.events.clear()
    bp.stop(parent, close=False, terminate=True)
    # Timer has no terminate of its own: StartStopStep.terminate falls back to stop.
    assert parent.events == ["terminate Terminable", "stop Timer"]


def test_error_in_one_stop_does_not_prevent_the_others(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Recorder):
        requires = (Timer,)

        def stop(self, parent: Parent) -> None:
            raise RuntimeError("boom")

    class Top(Recorder):
        requires = (Broken,)

    parent = Parent()
    bp = Blueprint([Top]).apply(parent)
    bp.start(parent)
    parent.events.clear()
    with caplog.at_level(logging.ERROR, logger="celeriac.bootsteps"):
        bp.stop(parent, close=False)
    assert parent.events == ["stop Top", "stop Timer"]
    assert bp.state == bootsteps.TERMINATE
    [record] = caplog.records
    assert record.name == "celeriac.bootsteps"
    assert "Broken" in record.getMessage()
    assert record.exc_info is not None


def test_failed_start_stops_what_was_started() -> None:
    class Bad(Recorder):
        requires = (Timer,)

        def start(self, parent: Parent) -> None:
            raise RuntimeError("cannot start")

    class Never(Recorder):
        requires = (Bad,)

    parent = Parent()
    bp = Blueprint([Never]).apply(parent)
    with pytest.raises(RuntimeError):
        bp.start(parent)
    parent.events.clear()
    bp.stop(parent, close=False)
    assert parent.events == ["stop Bad", "stop Timer"]


def test_start_stop_step_delegates_to_obj() -> None:
    class Service:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def start(self) -> None:
            self.calls.append("start")

        def stop(self) -> None:
            self.calls.append("stop")

        def shutdown(self) -> None:
            self.calls.append("shutdown")

    class Wrapped(StartStopStep):
        def create(self, parent: Parent) -> Service:
            return Service()

    parent = Parent()
    bp = Blueprint([Wrapped]).apply(parent)
    step = bp.order[0]
    assert isinstance(step, Wrapped)
    bp.start(parent)
    bp.send_all(parent, "shutdown")
    bp.stop(parent, terminate=True)
    assert step.obj.calls == ["start", "shutdown", "stop"]


def test_restart_and_send_all() -> None:
    parent = Parent()
    bp = Blueprint([Pool]).apply(parent)
    bp.start(parent)
    parent.events.clear()
    bp.restart(parent)
    assert parent.events == ["stop Pool", "stop Hub", "stop Timer"]
    parent.events.clear()
    bp.send_all(parent, "close", reverse=False)
    assert parent.events == ["close Timer", "close Hub", "close Pool"]


def test_send_all_propagates_unless_told_not_to() -> None:
    class Raises(Recorder):
        def close(self, parent: Parent) -> None:
            raise ValueError("nope")

    parent = Parent()
    bp = Blueprint([Timer, Raises]).apply(parent)
    with pytest.raises(ValueError):
        bp.send_all(parent, "close")
    parent.events.clear()
    bp.send_all(parent, "close", propagate=False)
    assert parent.events == ["close Timer"]


def test_info_merges_step_info() -> None:
    class Reports(Step):
        def info(self, parent: Any) -> dict[str, Any]:
            return {"pool": {"max-concurrency": 4}}

    parent = Parent()
    bp = Blueprint([Timer, Reports]).apply(parent)
    assert bp.info(parent) == {"pool": {"max-concurrency": 4}}


def test_cycle_error_names_the_cycle() -> None:
    class A(Step):
        name = "a.A"
        requires = ("b.B",)

    class B(Step):
        name = "b.B"
        requires = (A,)

    class C(Step):
        name = "c.C"
        requires = (B,)

    bp = Blueprint([C, A, B], name="worker")
    with pytest.raises(BootstepError) as info:
        bp.apply(Parent())
    assert str(info.value) == "cannot order worker bootsteps: cycle a.A -> b.B -> a.A"


def test_self_requirement_is_a_cycle() -> None:
    class Selfish(Step):
        name = "x.Selfish"
        requires = ("x.Selfish",)

    with pytest.raises(BootstepError, match=r"cycle x\.Selfish -> x\.Selfish$"):
        Blueprint([Selfish]).resolve()


def test_unknown_string_requirement() -> None:
    class MyStep(Step):
        name = "proj.MyStep"
        requires = ("Nope",)

    with pytest.raises(BootstepError) as info:
        Blueprint([MyStep]).apply(Parent())
    assert str(info.value) == "step proj.MyStep requires 'Nope', which is not a known step"


def test_unimportable_module_path_requirement_chains_the_import_error() -> None:
    class MyStep(Step):
        name = "proj.MyStep"
        requires = ("no_such_module_celeriac:Step",)

    with pytest.raises(BootstepError, match="requires 'no_such_module_celeriac:Step'") as info:
        Blueprint([MyStep]).resolve()
    assert isinstance(info.value.__cause__, ImportError)


def test_non_step_requirement() -> None:
    class MyStep(Step):
        name = "proj.MyStep"
        requires = (dict,)  # type: ignore[assignment]

    with pytest.raises(
        BootstepError, match=r"^step proj\.MyStep requires .*dict.*not a Step class"
    ):
        Blueprint([MyStep]).resolve()

    class ByPath(Step):
        name = "proj.ByPath"
        requires = ("collections:OrderedDict",)

    with pytest.raises(BootstepError, match=r"OrderedDict.*not a Step class"):
        Blueprint([ByPath]).resolve()

    with pytest.raises(BootstepError, match=r"lists .*int.*not a Step"):
        Blueprint([int]).resolve()  # type: ignore[list-item]


def test_two_steps_with_one_name() -> None:
    class One(Step):
        name = "same"

    class Two(Step):
        name = "same"

    with pytest.raises(BootstepError, match="two steps are named 'same'"):
        Blueprint([One, Two]).resolve()


def test_string_requirements_by_module_path_and_label() -> None:
    class ByColon(Recorder):
        requires = (f"{__name__}:Hub",)

    class ByDot(Recorder):
        requires = (f"{__name__}.Pool",)

    class ByLabel(Recorder):
        requires = ("ByColon", "ByDot")

    bp = Blueprint([ByLabel, ByDot, ByColon]).apply(Parent())
    # ByLabel needs both, so it waits; Hub, Pool and Timer are pulled in by path.
    assert labels(bp) == ["Timer", "Hub", "ByColon", "Pool", "ByDot", "ByLabel"]
    assert bp.requirements(ByLabel) == (ByColon, ByDot)


def test_label_of_a_step_pulled_in_later() -> None:
    class Needs(Recorder):
        requires = ("Timer", Hub)

    # "Timer" is not listed; it arrives as Hub's requirement and the label then resolves.
    assert labels(Blueprint([Needs]).apply(Parent())) == ["Timer", "Hub", "Needs"]


def test_ambiguous_label() -> None:
    class Timer(Step):  # same label as the module-level Timer
        pass

    class Needs(Step):
        name = "proj.Needs"
        requires = ("Timer",)

    with pytest.raises(BootstepError, match="ambiguous"):
        Blueprint([globals()["Timer"], Timer, Needs]).resolve()


def test_user_step_receives_parent_starts_after_requirements_and_stops_before() -> None:
    seen: dict[str, Any] = {}

    class UserStep(StartStopStep):
        requires = (Pool,)

        def __init__(self, parent: Parent, **kwargs: Any) -> None:
            seen["init"] = (parent, kwargs)

        def start(self, parent: Parent) -> None:
            parent.events.append("start UserStep")

        def stop(self, parent: Parent) -> None:
            parent.events.append("stop UserStep")

    class Worker(Blueprint):
        name = "worker"
        default_steps = (Timer, Hub, Pool, Consumer)

    parent = Parent()
    bp = Worker([UserStep]).apply(parent, concurrency=2)
    assert seen["init"] == (parent, {"concurrency": 2})
    parent.events.clear()
    bp.start(parent)
    assert parent.events == [
        "start Timer",
        "start Hub",
        "start Pool",
        "start UserStep",
        "start Consumer",
    ]
    parent.events.clear()
    bp.stop(parent, close=False)
    assert parent.events == [
        "stop Consumer",
        "stop UserStep",
        "stop Pool",
        "stop Hub",
        "stop Timer",
    ]


def test_graph_text_and_dot() -> None:
    class Off(Recorder):
        conditional = True
        enabled = False

    class Worker(Blueprint):
        name = "worker"
        default_steps = (Consumer, Off)

    bp = Worker()
    text = bp.graph_text()
    assert text.splitlines() == [
        "worker bootsteps, in start order:",
        "  1. Off       requires: -  [conditional]",
        "  2. Timer     requires: -",
        "  3. Hub       requires: Timer",
        "  4. Pool      requires: Hub, Timer",
        "  5. Consumer  requires: Pool  [last]",
    ]
    bp.apply(Parent())
    assert "Off       requires: -  [conditional, not included]" in bp.graph_text()

    dot = bp.graph_dot()
    assert dot.startswith('digraph "worker" {')
    assert f'"{Pool.name}" -> "{Hub.name}";' in dot
    assert f'"{Consumer.name}" [label="Consumer", shape=parallelogram];' in dot
    assert "style=dashed" in dot
    assert dot.endswith("}")
