"""The two exceptions library code raises for the user: DeployError (one clear line on
stderr, non-zero exit) and BackendUnavailable (bench reports the row as skipped)."""


class DeployError(Exception):
    """A problem the user can fix (bad input, missing file, unavailable device).

    Library code raises it with a message that says what was wrong and what was
    expected; ``cli`` prints it as one line and exits non-zero, without a traceback.
    """


class BackendUnavailable(Exception):
    """This backend cannot run here (package or GPU missing); the message says why.

    Bench lists such a backend as skipped with the message instead of failing.
    """
