"""The Raspberry Pi's side (``edge-agent``): camera, faces, emotions, per-minute windows, outbox, MQTT.

Invariant: imports the common layer and never the collector; developer tools only lazily,
from the command line. No frame, crop or box leaves the process: only window payloads do.
"""
