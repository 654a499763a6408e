"""The edge-agent distribution: what a Raspberry Pi installs (`pip install .`).

It carries the whole package (the demo and the developer tools run both sides) but installs only
the agent's dependencies: nothing of the collector's store, templates or charts. The school
server installs the edge-collector distribution instead (collector/setup.py), which has no
OpenCV and no LiteRT. Both read their dependencies from requirements/.
"""

import runpy
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
MODEL_FILES = [
    "models/emotion_fer_gap9_fear_int8.tflite",
    "models/emotion_fer_gap9_fear_int8.json",
    "models/emotion_mini_xception_int8.tflite",
    "models/emotion_mini_xception_int8.json",
    "models/haarcascade_frontalface_default.xml",
    "models/LICENSE.haarcascade",
    "models/LICENSE.fer-weights",
    "models/MODEL_CARD.md",
]
LISTS = runpy.run_path(str(HERE / "requirements" / "lists.py"))
requirements = LISTS["requirements"]

setup(
    name="edge-agent",
    version=LISTS["VERSION"],
    description="Classroom emotion sensing at the edge: anonymised per-minute emotion counts over MQTT",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["edge_agent", "edge_agent.*"]),
    # The samples (a short clip and photos, MIT) feed `edge-agent demo` and the tests.
    package_data={"edge_agent": ["samples/*"], "edge_agent.collector": ["templates/*.html"]},
    # Installed copies find the model here; a source checkout uses its own models/.
    data_files=[("share/edge-agent/models", MODEL_FILES)],
    install_requires=requirements("common", "agent"),
    extras_require={
        # Only for building, training and explaining the model and for the Keras baseline; never
        # needed on a Pi. matplotlib draws `edge-agent explain`'s sheets.
        "model": ["tensorflow-cpu==2.21.*", "tf_keras==2.21.*", "matplotlib>=3.7"],
        # The demo runs the collector beside two agents; mosquitto, or the embedded broker
        # (amqtt: MQTT 3.1.1, pure Python) where mosquitto is not installed.
        "demo": ["amqtt>=0.11", *requirements("collector")],
        # The tests exercise both sides. Selenium drives Debian's chromium through its chromedriver
        # (scripts/setup.sh installs both); ansible brings community.crypto and community.docker,
        # which the deployment test uses, and bcrypt hashes the dashboard's passwords on the control
        # node as the collector role does; ruff is the lint .ci/run runs, and mypy (with the stubs of
        # PyYAML and tqdm) its type check: within one major version, whose defaults the code is checked to.
        "test": ["pytest>=7", "hypothesis>=6", "selenium>=4.11", "ansible>=12", "ansible-lint>=25", "bcrypt>=4",
                 "ruff>=0.6", "mypy>=2.4,<3", "types-PyYAML>=6", "types-tqdm>=4.62", *requirements("collector")],
    },
    entry_points={"console_scripts": ["edge-agent=edge_agent.agent.cli:main"]},
)
