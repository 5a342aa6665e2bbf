"""User-facing errors.

Every error a user can cause (bad file, unknown name, missing download) is raised as
:class:`RdfiaError` with a message that names the offending file or argument and says what to do.
The CLI prints such errors on one line and exits with status 2, without a traceback.
"""


class RdfiaError(Exception):
    """An error caused by user input or the environment, with an actionable message."""
