"""The console scripts' entry points: the cyclic garbage collector held off
while the program starts.

Starting, a run imports about 130 modules and builds its option parser:
objects by the ten thousand, none of them garbage, which the collector
would walk again and again as they pile up (its collections during
start-up were 2 to 3 ms of a one-shot run, about 5 %). It is disabled
before those imports; once the options are parsed (cli.started) what exists
is frozen, never walked again, and collection resumes as usual for the rest
of the run, loops included. (A frozen object dropped later is still freed
by its reference count; only start-up's own reference cycles stay, once.)
Code that imports the package (tests, other programs) is not affected: only
these entry points disable it.
"""

import gc

gc.disable()

from apache_metrics_exporter.cli import console_main, reaper_console  # noqa: E402

__all__ = ["console_main", "reaper_console"]
