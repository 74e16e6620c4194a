"""xprompt_jax.evaluation."""
