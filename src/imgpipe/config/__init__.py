"""The typed schema of params.yaml: one section per stage, each family's architecture from the registry."""
