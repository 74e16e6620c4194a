"""Cloud TPU launch tooling (`python -m launch.tpu_vm ...`); not part of the installed package."""
