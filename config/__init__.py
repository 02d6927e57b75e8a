"""The example configurations (relay, server, PXE host, lab), shipped as package data."""
