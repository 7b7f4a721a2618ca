"""Built-in plugins: ordinary plugin modules registered through the same hooks as anyone else's."""
