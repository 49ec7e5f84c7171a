"""Media types of the OCI image spec and Docker's schema 2 (both are accepted).

See the OCI image spec, media-types.md, and Docker's "Image Manifest V 2,
Schema 2" document.
"""

OCI_LAYOUT_VERSION = "1.0.0"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFESTS = {OCI_MANIFEST, DOCKER_MANIFEST}
CONFIGS = {OCI_CONFIG, DOCKER_CONFIG}
LAYERS_UNCOMPRESSED = {OCI_LAYER, DOCKER_LAYER}
LAYERS_GZIP = {OCI_LAYER_GZIP, DOCKER_LAYER_GZIP}
LAYERS = LAYERS_UNCOMPRESSED | LAYERS_GZIP | {OCI_LAYER_ZSTD}

# The annotation that carries a tag in an OCI index (image-layout.md).
REF_NAME = "org.opencontainers.image.ref.name"

# The sha256 of an empty tar (1024 zero bytes): docker's layer.DigestSHA256EmptyTar.
# A commit that changed nothing adds no layer, only an "empty_layer" history entry.
EMPTY_TAR_DIGEST = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
