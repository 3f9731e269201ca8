"""DAGs, time, limits and failure policy. Knows nothing about Kubernetes or git."""
