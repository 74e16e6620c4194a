"""Pretraining a T5 backbone from scratch: span corruption, then LM adaptation (prefix LM), all parameters trained."""
