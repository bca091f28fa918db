"""Installs vapnev_tf with its console scripts (`vapnev-train`, `vapnev-eval`, ...)."""
import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements():
  lines = (_HERE / "requirements.txt").read_text().splitlines()
  return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setuptools.setup(
    name="vapnev_tf",
    version="0.1.0",
    description="VAPNEV: a VAE whose p(x|z) is an exact conditional real-NVP flow (TensorFlow/TFP).",
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["vapnev_tf", "vapnev_tf.*"]),
    python_requires=">=3.10",
    install_requires=_requirements(),
    extras_require={"dev": ["pytest==9.2.0", "hypothesis==6.170.17", "matplotlib==3.11.2",
                            "psutil==7.2.2", "PyYAML==6.0.3"]},
    entry_points={
        "console_scripts": [
            "vapnev-train=vapnev_tf.train:run",
            "vapnev-eval=vapnev_tf.evaluate:run",
            "vapnev-sample=vapnev_tf.sample:run",
            "vapnev-export=vapnev_tf.export:run",
        ]
    },
)
