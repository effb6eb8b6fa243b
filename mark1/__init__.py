"""The Mark I Perceptron, physically modelled (numpy only; importing this never imports torch)."""

from mark1.images import RETINA_SHAPE, to_retina
from mark1.stimuli import TASKS, Task, make_task

__version__ = "0.1.0"

__all__ = ["RETINA_SHAPE", "TASKS", "Task", "make_task", "to_retina", "__version__"]
