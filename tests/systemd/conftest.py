"""tests/systemd: the packaged unit under a real systemd (make systemd-check).

When a check fails, its report gets the container's journal (journalctl
inside the container) as an extra section: what systemd and warmpoold said
is the first thing to read. A test module offers it as a module-level
journal_for_report() returning the running container's journal, or None.
"""

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    source = getattr(item.module, "journal_for_report", None)
    if rep.failed and source:
        try:
            text = source()
        except Exception as e:  # the container may be what failed
            text = f"(no journal: {e!r})"
        if text is not None:
            rep.sections.append(("container journal (journalctl -b inside)", text))
