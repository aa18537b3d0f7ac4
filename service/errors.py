"""The errors of the service layer that a person caused."""


class BatchInputError(ValueError):
    """Bad input from a person: the message is one line that says what to fix."""


class NotFoundError(BatchInputError):
    """The object does not exist, or belongs to someone the user may not see: the same answer."""
