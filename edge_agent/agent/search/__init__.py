"""The learned face search: where to look for faces in a fixed camera's view, learned from the faces found there.

Modules, each importing only those above it (and :mod:`edge_agent.agent.faces`), never one below:

- :mod:`.regions`: regions of a frame searched for a range of face sizes, merging them, their cost;
- :mod:`.seats`: the places where faces were found lately, and which box is a seat's face;
- :mod:`.motion`: what changed since the frame before, outside the seats (someone sitting down);
- :mod:`.bands`: bands of rows and face sizes, planned from the faces whole-frame searches found;
- :mod:`.state`: the state file those faces are kept in across restarts;
- :mod:`.learned`: :class:`LearnedSearch`, which chooses each frame's search and runs the detector.

What other modules use is re-exported here. The rules, and the measurements behind them, are in
docs/face-search.md.
"""

from .bands import Band, Plan, plan_bands
from .learned import LearnedSearch
from .seats import reach_for
from .state import FORMAT, describe_state, read_state

__all__ = ["FORMAT", "Band", "LearnedSearch", "Plan", "describe_state", "plan_bands", "reach_for", "read_state"]
