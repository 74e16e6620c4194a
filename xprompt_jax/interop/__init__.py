"""Interoperability with other prompt-tuning stacks: Hugging Face PEFT adapters and google-research/prompt-tuning."""
