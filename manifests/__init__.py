"""The kustomize tree, shipped as package data (``datawheel.manifests``) for `deploy render`."""
