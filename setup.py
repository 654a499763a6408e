from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
MODEL_FILES = [
    "models/emotion_mini_xception_int8.tflite",
    "models/emotion_mini_xception_int8.json",
    "models/haarcascade_frontalface_default.xml",
    "models/LICENSE.haarcascade",
    "models/LICENSE.fer-weights",
    "models/MODEL_CARD.md",
]

setup(
    name="edge-agent",
    version="0.1.0",
    description="Classroom emotion sensing at the edge: anonymised per-minute emotion counts over MQTT",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["edge_agent", "edge_agent.*"]),
    # The samples (a short clip and photos, MIT) feed `edge-agent demo` and the tests.
    package_data={"edge_agent": ["samples/*"], "edge_agent.collector": ["templates/*.html"]},
    # Installed copies find the model here; a source checkout uses its own models/.
    data_files=[("share/edge-agent/models", MODEL_FILES)],
    install_requires=[
        "numpy>=1.24",
        # OpenCV 5 wheels dropped CascadeClassifier.
        "opencv-python-headless>=4.8,<5",
        # LiteRT is the runtime we measure; tflite-runtime and tensorflow.lite work too
        # (see edge_agent/runtime.py) for images that already carry them.
        "ai-edge-litert>=1.2",
        "pydantic>=2.5",
        "PyYAML>=6",
        "tqdm>=4.62",
        "matplotlib>=3.7",
        "paho-mqtt>=2.0,<3",
        # sd_notify and the journal; builds against libsystemd-dev (scripts/setup.sh installs it).
        "systemd-python>=235",
        # The collector's store: SQLite by default, PostgreSQL through psycopg.
        "SQLAlchemy>=2.0",
        "psycopg[binary]>=3.1",
        # The dashboard's HTML pages, escaped properly.
        "Jinja2>=3.1",
        # Time zones for the dashboard where the system has no zoneinfo files (minimal images).
        "tzdata",
    ],
    extras_require={
        # Only for building the model and for the Keras baseline; never needed on a Pi.
        "model": ["tensorflow-cpu==2.21.*", "tf_keras==2.21.*"],
        # The demo's broker where mosquitto is not installed (MQTT 3.1.1, pure Python).
        "demo": ["amqtt>=0.11"],
        # Selenium drives Debian's chromium through its chromedriver (scripts/setup.sh installs both).
        # ansible brings community.crypto and community.docker, which the deployment test uses.
        "test": ["pytest>=7", "hypothesis>=6", "selenium>=4.11", "ansible>=12", "ansible-lint>=25"],
    },
    entry_points={"console_scripts": ["edge-agent=edge_agent.agent.cli:main",
                                       "edge-collector=edge_agent.collector.cli:main"]},
)
