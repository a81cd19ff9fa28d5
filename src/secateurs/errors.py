"""User-facing errors: anything caused by bad input or configuration.

The CLI prints these as one line (no traceback) and exits non-zero; the message always names the
bad value so the user can find it.
"""


class SecateursError(Exception):
    """Bad input, configuration or model: a problem the user can fix."""


class RewardError(SecateursError):
    """A reward failed or returned something unusable (an exception, NaN, infinity, a non-number, the
    wrong number of scores); the message names the reward and the prompt id."""
