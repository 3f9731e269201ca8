"""reconciler: a GitOps daemon for multi-step Kubernetes remediation workflows."""

__version__ = "0.1.0"
