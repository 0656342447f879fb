"""After the run: ``report()`` (being built, issue 6)."""


def report(run=None, *, store=None, **kw):
    return None
