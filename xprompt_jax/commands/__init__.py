"""Subcommands of the `xprompt-jax` console script; each module owns its absl flags and a `main(argv)`."""
