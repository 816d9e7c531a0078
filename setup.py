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
        "qmix_isaac.rlgames",
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
        # train_dir= / checkpoint= on S3 (any fsspec URL works with its backend installed); s3fs before
        # 2024 is the old boto3-based one, which pip picks when boto pins clash (it warns on import)
        "s3": ["s3fs>=2024.1"],
        # PPO / MAPPO baselines (train=<Task>PPO): rl-games 1.6.5 is the first 1.6.x that installs
        # on Python >= 3.11 (1.6.1 caps Python < 3.11 and pins gym 0.23, wandb < 0.13)
        "rlgames": ["rl-games>=1.6.5,<1.7"],
        # isaacgym-stubs + mypy: make test type-checks the Isaac Gym engine against Isaac Gym's API
        # (Isaac Gym itself is not on PyPI); mypy >= 1.17 refuses python_version 3.8 (mypy.ini)
        "dev": ["pytest>=7", "vermin", "isaacgym-stubs", "mypy<1.17",
                "newton[sim]>=1.0", "tensorboard", "wandb",
                "s3fs>=2024.1", "moto[server]>=5", "rl-games>=1.6.5,<1.7"],
    },
)
