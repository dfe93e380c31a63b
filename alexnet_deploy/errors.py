"""The two exceptions library code raises for the user: DeployError (one clear line on
stderr, non-zero exit) and BackendUnavailable (bench reports the row as skipped), and the
one warning it issues: Skipped (an input left out, one ``warning:`` line)."""


class DeployError(Exception):
    """A problem the user can fix (bad input, missing file, unavailable device).

    Library code raises it with a message that says what was wrong and what was
    expected; ``cli`` prints it as one line and exits non-zero, without a traceback.
    """


class BackendUnavailable(Exception):
    """This backend cannot run here (package or GPU missing); the message says why.

    Bench lists such a backend as skipped with the message instead of failing.
    """


class Skipped(UserWarning):
    """Library code left an input out (a FIFO or a dangling link named like an image
    in a folder it walked) and goes on; the message says which and why.

    Issued with :func:`warnings.warn`, so library code never prints: ``cli`` shows each
    as one ``warning:`` line on stderr, other callers get Python's warning machinery.
    """
