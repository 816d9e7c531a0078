"""qmix-isaac: cooperative robot teams on GPU physics, trained with QMIX.

    pip install -e .[dev]
"""
from setuptools import setup

setup(
    name="qmix-isaac",
    version="0.1.0",
    description="Cooperative multi-robot tasks on MuJoCo / Newton / Isaac Gym, trained with QMIX on the device",
    python_requires=">=3.8",
    packages=[
        "qmix_isaac",
        "qmix_isaac.sim",
        "qmix_isaac.qmix",
        "qmix_isaac.record",
        "qmix_isaac.tasks",
        "qmix_isaac.tasks.base",
    ],
    package_dir={"qmix_isaac.tasks": "tasks", "qmix_isaac.tasks.base": "tasks/base"},
    install_requires=[
        "torch>=2.0",
        "numpy",
        "mujoco>=3.2",
        "hydra-core>=1.3",
        "pyyaml",
        "imageio-ffmpeg",
        "matplotlib",
    ],
    extras_require={
        # Newton (MuJoCo-Warp solver): the CUDA engine; also runs, slowly, on CPU.
        "newton": ["newton[sim]>=1.0"],
        "wandb": ["wandb"],
        "dev": ["pytest>=7", "vermin", "newton[sim]>=1.0", "tensorboard", "wandb"],
    },
)
