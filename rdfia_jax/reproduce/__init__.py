"""``rdfia-jax reproduce``: the whole report in one command, each number beside the report's.

:mod:`.budget` (how much runs), :mod:`.references` (the numbers to meet, with their sources),
:mod:`.sections` (one thin adapter per report section), :mod:`.runner` (folders, statuses, reruns) and
:mod:`.report` (report.md and a self-contained index.html).
"""

from rdfia_jax.reproduce.runner import reproduce  # noqa: F401
