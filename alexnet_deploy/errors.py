"""The one exception type the CLI turns into a single clear line on stderr."""


class DeployError(Exception):
    """A problem the user can fix (bad input, missing file, unavailable device).

    Library code raises it with a message that says what was wrong and what was
    expected; ``cli`` prints it as one line and exits non-zero, without a traceback.
    """
