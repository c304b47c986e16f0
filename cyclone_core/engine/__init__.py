"""The distributed engine: protocol, master, controllers and worker pools."""
