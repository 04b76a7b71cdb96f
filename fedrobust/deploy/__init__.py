"""Deployment credentials (TLS certificates, SuperNode keys); the Flower processes live in server/deploy.py."""
