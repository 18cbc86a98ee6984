"""The judge images: Dockerfile lint, agreement between the images and winner.json, and the
build-stage budget (`tournament images check`)."""
