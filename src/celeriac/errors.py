"""The one exception hierarchy: every error celeriac raises, compiled or pure, comes from here.

Task-facing names (``Retry``, ``Reject``, ``Ignore``, ``NotRegistered``,
``MaxRetriesExceededError``, ``TimeLimitExceeded`` ...) match Celery's so that code written for
Celery reads the same. :data:`CELERY_EXCEPTION_MODULES` says under which module name each one
travels on the wire, so a Celery client reading our results rebuilds its own class.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CELERY_EXCEPTION_MODULES",
    "AlreadyRegistered",
    "BootstepError",
    "CeleriacError",
    "ChannelError",
    "ChordError",
    "ConfigurationError",
    "ConnectionBlocked",
    "ConnectionError",
    "ContentDisallowed",
    "DecodeError",
    "EncodeError",
    "Ignore",
    "ImproperlyConfigured",
    "InvalidTaskError",
    "MaxRetriesExceededError",
    "MessageTooLarge",
    "NotRegistered",
    "ProtocolError",
    "Reject",
    "Retry",
    "SecurityError",
    "SerializationError",
    "SoftTimeLimitExceeded",
    "TaskError",
    "TaskPredicate",
    "TaskRevokedError",
    "Terminated",
    "TimeLimitExceeded",
    "TimeoutError",
    "TransportError",
    "UnknownMessageError",
    "WorkerLostError",
    "WorkerShutdown",
    "WorkerTerminate",
]


class CeleriacError(Exception):
    """Base class of every celeriac error."""


class ConfigurationError(CeleriacError):
    """A setting, URL or CLI option is wrong."""


ImproperlyConfigured = ConfigurationError


class SecurityError(CeleriacError):
    """Refused for safety: e.g. a result names a class that is not an exception."""


# -- serialization ---------------------------------------------------------------------------


class SerializationError(CeleriacError):
    """Base for encode and decode failures of message bodies."""


class EncodeError(SerializationError):
    """A value could not be serialized."""


class DecodeError(SerializationError):
    """A body could not be decoded (bad JSON, bad compression, bad text encoding)."""


class ContentDisallowed(SerializationError):
    """The content type is not in ``accept_content``; the body was never deserialized."""


# -- protocol --------------------------------------------------------------------------------


class ProtocolError(CeleriacError):
    """A message or frame breaks the wire contract."""


class InvalidTaskError(ProtocolError):
    """A task message with a bad field (kwargs not a mapping, bad eta, wrong body shape)."""


class UnknownMessageError(ProtocolError):
    """A message that is not a task at all (no ``task`` header and no v1 body)."""


class MessageTooLarge(ProtocolError):
    """A body over the configured maximum size; rejected before decoding."""


# -- transport -------------------------------------------------------------------------------


class TransportError(CeleriacError):
    """Base for broker errors; ``reply_code``/``reply_text`` carry the broker's own words."""

    def __init__(
        self, message: str = "", reply_code: int | None = None, reply_text: str | None = None
    ) -> None:
        super().__init__(message)
        self.reply_code = reply_code
        self.reply_text = reply_text


class ConnectionError(TransportError):
    """The connection to the broker failed or was closed."""


class ChannelError(TransportError):
    """The broker closed a channel (reply code and text are in the message)."""


class ConnectionBlocked(TransportError):
    """Publishing timed out while the broker blocks this connection (e.g. a memory alarm)."""


# -- bootsteps -------------------------------------------------------------------------------


class BootstepError(CeleriacError):
    """A blueprint cannot be resolved: a cycle or a missing requirement."""


# -- tasks (Celery's names) ------------------------------------------------------------------


class TaskError(CeleriacError):
    """Base for task errors."""


class TaskPredicate(CeleriacError):
    """Raised by a task to tell the worker what to do with its message."""


class Retry(TaskPredicate):
    """The task is to be retried (raised by ``Task.retry``)."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | str | None = None,
        when: float | Any = None,
        is_eager: bool = False,
        sig: Any = None,
        **kwargs: Any,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        super().__init__(self, exc, when, **kwargs)

    def humanize(self) -> str:
        if isinstance(self.when, (int, float)):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.message, self.exc, self.when)


class Ignore(TaskPredicate):
    """The task asks that no state be stored and the message be acked."""


class Reject(TaskPredicate):
    """The task asks that its message be rejected (``requeue`` says whether to redeliver)."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __repr__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class NotRegistered(KeyError, TaskError):
    """The task name is not in the registry."""

    def __repr__(self) -> str:
        return f"NotRegistered({self.args[0]!r})" if self.args else "NotRegistered()"


class AlreadyRegistered(TaskError):
    """A task of that name is already registered with a different function."""


class MaxRetriesExceededError(TaskError):
    """``Task.retry`` was called more than ``max_retries`` times."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.task_args = kwargs.pop("task_args", [])
        self.task_kwargs = kwargs.pop("task_kwargs", {})
        super().__init__(*args, **kwargs)


class TaskRevokedError(TaskError):
    """The task was revoked or expired, so it did not run."""


class ChordError(TaskError):
    """A chord header task failed, so the body cannot run."""


class TimeoutError(TaskError):
    """Waiting for a result took longer than the timeout."""


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when its soft time limit passes (catchable).

    Deliberately not a :class:`CeleriacError`: task code written for Celery catches it alone.
    """


class TimeLimitExceeded(Exception):
    """The task passed its hard time limit and its process was killed."""


class WorkerLostError(Exception):
    """The process running the task exited before the task finished."""


class Terminated(Exception):
    """The task was terminated by a signal (``revoke(terminate=True)``)."""


class WorkerShutdown(SystemExit):
    """Raised to make the worker shut down warmly."""


class WorkerTerminate(SystemExit):
    """Raised to make the worker shut down now (cold)."""


# Where each of our task-facing classes lives in Celery, so results we store name a module a
# Celery reader imports, and results Celery stores map back to our classes.
CELERY_EXCEPTION_MODULES: dict[str, str] = {
    "Retry": "celery.exceptions",
    "Ignore": "celery.exceptions",
    "Reject": "celery.exceptions",
    "NotRegistered": "celery.exceptions",
    "AlreadyRegistered": "celery.exceptions",
    "MaxRetriesExceededError": "celery.exceptions",
    "TaskRevokedError": "celery.exceptions",
    "ChordError": "celery.exceptions",
    "TimeoutError": "celery.exceptions",
    "InvalidTaskError": "celery.exceptions",
    "SecurityError": "celery.exceptions",
    "ImproperlyConfigured": "celery.exceptions",
    "SoftTimeLimitExceeded": "billiard.exceptions",
    "TimeLimitExceeded": "billiard.exceptions",
    "WorkerLostError": "billiard.exceptions",
    "Terminated": "billiard.exceptions",
    "ContentDisallowed": "kombu.exceptions",
    "DecodeError": "kombu.exceptions",
    "EncodeError": "kombu.exceptions",
}
