"""Shared pieces of the nightly precision-marketing platform: config, storage, publishing, SQL catalog, CLI."""
