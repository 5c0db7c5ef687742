"""The project around the code: the docs, the Makefile, the import layers."""
