"""reconciler: a GitOps daemon for multi-step Kubernetes remediation workflows."""

__version__ = "0.1.0"
# Where reconciler keeps what is its own in the cluster (Leases, capture and inputs Secrets)
# unless told otherwise: the namespace deploy/ installs it in.
DEFAULT_NAMESPACE = "reconciler-system"
