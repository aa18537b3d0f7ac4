"""The one error of the service layer that a person caused."""


class BatchInputError(ValueError):
    """Bad input from a person: the message is one line that says what to fix."""
