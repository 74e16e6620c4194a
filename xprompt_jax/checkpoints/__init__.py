"""xprompt_jax.checkpoints."""
