"""The Mark I Perceptron, physically modelled (numpy only; importing this never imports torch).

``MarkI`` is the machine as a scikit-learn-style classifier; ``PRESETS`` are the named machines
(``ideal``, ``cds-1960``, ``cds-worn``); ``make_task`` draws the retina tasks; ``sweep`` runs
many machines over a grid of parameters and seeds.
"""

from mark1.images import RETINA_SHAPE, to_retina
from mark1.machine import MarkI, load_machine
from mark1.presets import CDS_1960, IDEAL, PRESETS, Preset, get_preset
from mark1.stimuli import TASKS, Task, make_task
from mark1.sweeps import SweepResult, sweep
from mark1.version import __version__

__all__ = [
    "CDS_1960", "IDEAL", "PRESETS", "RETINA_SHAPE", "TASKS", "MarkI", "Preset", "SweepResult",
    "Task", "__version__", "get_preset", "load_machine", "make_task", "sweep", "to_retina",
]
