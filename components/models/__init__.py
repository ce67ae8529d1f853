"""Model families; the registry of their names is components.models.registry."""
