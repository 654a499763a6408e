"""The one exception type that carries a message meant for a person."""


class EdgeAgentError(Exception):
    """A problem the user can fix (a bad file, a bad argument).

    The command line prints the message alone and exits with status 2, so the
    message must say what is wrong and where.
    """

    exit_status = 2
