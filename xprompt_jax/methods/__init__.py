"""xprompt_jax.methods."""
