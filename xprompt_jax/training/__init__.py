"""xprompt_jax.training."""
