"""The one error type users see: it names the problem and the fix."""


class LensLabError(ValueError):
    """Bad input or configuration. ``str(err)`` reads "problem. Fix: how to mend it"."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}. Fix: {fix}" if fix else problem)
