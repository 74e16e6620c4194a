"""SeqIO tasks and mixtures; registered on import."""
