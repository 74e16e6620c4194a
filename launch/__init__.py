"""Cloud TPU launch tooling: `xprompt-jax launch ...` (installed as `xprompt_jax.launch`), or
`python -m launch.tpu_vm ...` from the repository root."""
