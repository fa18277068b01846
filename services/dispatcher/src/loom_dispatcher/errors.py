"""Dispatcher errors: one base class, each says whether the message is worth redelivering."""


class DispatcherError(Exception):
    """Base class of dispatcher errors."""

    retryable = False


class BadSubmission(DispatcherError):
    """A submitted message that can never become a task (dead-lettered with the reason)."""


class RegistryUnavailable(DispatcherError):
    """The registry did not answer a pick in time; the submission is redelivered."""

    retryable = True
