"""Deploying datawheel on Kubernetes: render and apply the kustomize manifests, canary rollouts."""
