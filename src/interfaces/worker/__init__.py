"""The delivery worker: claims due notifications and delivers them."""
