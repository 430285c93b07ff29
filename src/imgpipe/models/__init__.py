"""Model families (a registry of them), their Keras builders and the layers they share."""
