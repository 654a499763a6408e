"""The neutral layer the agent (on a Pi) and the collector (on a server) both import.

The MQTT contract, the MQTT client setup, the service plumbing under systemd, the error model,
the command-line helpers and the YAML config machinery. Invariant: nothing here imports the
agent's or the collector's modules, or what only one side installs (OpenCV, numpy, LiteRT,
SQLAlchemy, psycopg, Jinja2, matplotlib), so each side's install carries only its own weight.
"""
