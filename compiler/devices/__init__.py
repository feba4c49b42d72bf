"""Devices over time: the device models and their registry, programming the arrays, drift and compensation,
and accuracy over time."""
