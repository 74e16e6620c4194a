"""xprompt_jax: parameter-efficient tuning of frozen T5 models in JAX/Flax.

`tasks/` ships as the subpackage `xprompt_jax.tasks` and the gin configs under `gin/` ship as package data
(`xprompt_jax/gin/...` once installed), so `--gin_file=models/t5_1_1_base.gin` resolves from anywhere.
"""
import setuptools

INSTALL_REQUIRES = [
    # Upper bounds on the minor versions this release is tested with (jax pins libtpu per release).
    "jax>=0.10,<0.11",
    "flax>=0.12,<0.13",
    "optax>=0.2.4,<0.3",
    "orbax-checkpoint>=0.11,<0.13",
    "seqio>=0.0.19",
    "tensorflow-datasets>=4.9",
    "importlib_resources>=6.0",
    "gin-config>=0.5",
    "clu>=0.0.12",
    "tensorboard>=2.15",
    "tensorstore>=0.1.60",
    "sentencepiece>=0.2",
    "msgpack>=1.0",
    "numpy>=1.26",
    "absl-py>=2.0",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "scipy>=1.11",
    "scikit-learn>=1.3",
    "sacrebleu>=2.4",
    "rouge-score>=0.1.2",
    "safetensors>=0.4",
]

# libtpu compiles for TPU topologies ahead of time even on a CPU-only machine (`xprompt-jax compile`); jax 0.10
# pins libtpu 0.0.42. torch is pinned to the CPU wheel the development machines carry: an unpinned `torch` pulls a
# multi-GB CUDA build. torch/transformers/peft are only for the side-by-side benchmarks and the PEFT round trip.
LIBTPU = "libtpu==0.0.42.*; platform_machine == 'x86_64' and sys_platform == 'linux'"
PEFT = ["torch==2.13.0", "transformers>=5.0", "peft>=0.17"]
EXTRAS = {
    "hf": ["safetensors>=0.4"],
    "tpu": ["jax[tpu]>=0.10,<0.11"],
    "aot": [LIBTPU],
    "bench": PEFT,
    "test": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "safetensors>=0.4", LIBTPU, *PEFT],
}

setuptools.setup(
    name="xprompt_jax",
    version="0.1.0",
    description="Prompt, prefix, MPT and XPrompt tuning of frozen T5 models in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # jax 0.10 has wheels for Python 3.11+ only (the newest jaxlib for 3.10 is 0.6.2).
    packages=setuptools.find_packages(include=["xprompt_jax", "xprompt_jax.*"])
    + ["xprompt_jax.tasks", "xprompt_jax.gin", "xprompt_jax.launch"],
    package_dir={"xprompt_jax.tasks": "tasks", "xprompt_jax.gin": "gin", "xprompt_jax.launch": "launch"},
    package_data={"xprompt_jax.gin": ["*.gin", "*/*.gin", "*/*/*.gin"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["xprompt-jax=xprompt_jax.cli:run"]},
)
