"""xprompt_jax.pipelines."""
