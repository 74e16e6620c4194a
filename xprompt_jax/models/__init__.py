"""xprompt_jax.models."""
