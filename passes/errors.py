"""xbar's errors and warnings: one base class, and one subclass for mistakes the user can fix.

Every error xbar raises on purpose is an :class:`XbarError`. A :class:`UserError`
is the user's to fix (a configuration, data, a model file, an API call, a layer
that cannot be tiled to the array size): its message says what to do, and the
command line exits with status 2. Any other ``XbarError`` means the work failed
(a model that cannot be captured or exported): status 1.
"""


class XbarError(Exception):
    """Base of every error xbar raises on purpose."""


class UserError(XbarError, ValueError):
    """Input the user can fix; the message says how."""


class NoCrossbarLayersWarning(UserWarning):
    """The model has no layer that maps to a crossbar; it stays fully digital."""


class UnmatchedSelectorWarning(UserWarning):
    """A layer rule, include / exclude pattern or layer name matched no layer of the model."""
