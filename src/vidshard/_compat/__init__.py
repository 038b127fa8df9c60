"""Small compatibility shims. Each one is inert where it is not needed."""
