"""tournament: choose which fine-tuned LLM build deserves one of your few tries at a remote judge."""

__version__ = "0.1.0"
