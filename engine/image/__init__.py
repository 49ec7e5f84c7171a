"""Images: references, OCI manifests and configs, the tag index, base images."""
