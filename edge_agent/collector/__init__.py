"""The school server's side (``edge-collector``): MQTT in, a store, charts and a dashboard out.

Invariant: imports the common layer and never the agent, so a server installs no OpenCV,
numpy or LiteRT; developer tools only lazily, from the command line.
"""
