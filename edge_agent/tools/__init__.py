"""Developer tools: building and training the model, benchmarks, probes, and the demo.

None of this is on a daemon's import path: the command lines import a tool only when its
command runs. A tool may use both the agent's and the collector's side.
"""
