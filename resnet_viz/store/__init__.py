"""What lives on disk: run folders (the source of truth about a run), their listing,
checkpoints and exported models. Reads ``nets`` to rebuild a model from its files."""
