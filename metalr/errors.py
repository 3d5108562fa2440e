"""The one exception type for bad user input.

Everything a user can get wrong (an unknown task or policy name, a bad number, a missing or
corrupted checkpoint) raises :class:`MetalrError` with a message that says what was wrong and
what is accepted. The CLI turns it into one line on stderr and exit status 2.
"""


class MetalrError(ValueError):
    """Bad user input: the message names what was wrong and what is accepted."""
